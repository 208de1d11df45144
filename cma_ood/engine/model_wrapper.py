"""DDP for models that ``torch.compile`` their own encoders."""
from typing import Dict, Union

import torch
import torch._dynamo
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CompiledDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that chooses how torch.compile treats
    DDP.

    By default (``torch._dynamo.config.optimize_ddp = True``) Dynamo's
    DDPOptimizer splits every compiled graph at DDP's bucket boundaries so
    that gradient all-reduces can start during the backward pass; the split
    graphs fuse less and launch more kernels. For ``MultiModalClassifier``
    (compiled image and text towers) every same-machine measurement so far
    favours whole graphs (``docs/benchmarks.md``; ViT-B/16, batch 256 per
    GPU): on one H100 under DDP with one process, 3452 img/s whole against
    3369 split (3536 without DDP); before the per-step host
    synchronisations were removed, 3066 against 2646 on one H100 and 1.73x
    against 1.53-1.55x of one GPU on two H200s.

    The setting is applied around :meth:`train_step` only, where the
    compiled graphs are traced under DDP; the process-wide Dynamo
    configuration is left as it was.

    Args:
        module: the model.
        optimize_ddp (bool): DDPOptimizer on (True, torch's default) or
            off (False, one graph per compiled function). Defaults to
            False.
        **kwargs: ``MMDistributedDataParallel`` / ``DistributedDataParallel``
            arguments (``broadcast_buffers``, ``bucket_cap_mb``, ...).
    """

    def __init__(self, module, optimize_ddp: bool = False, **kwargs):
        if not isinstance(optimize_ddp, bool):
            raise TypeError('CompiledDistributedDataParallel: optimize_ddp '
                            f'must be True or False, got {optimize_ddp!r}')
        super().__init__(module=module, **kwargs)
        self.optimize_ddp = optimize_ddp

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        with torch._dynamo.config.patch(optimize_ddp=self.optimize_ddp):
            return super().train_step(data, optim_wrapper)
