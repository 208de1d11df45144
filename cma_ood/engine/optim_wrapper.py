"""Mixed precision where the hardware supports it, fp32 elsewhere."""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS


def amp_dtype() -> str:
    """``'bfloat16'`` on GPUs that support it, else ``'float16'``."""
    return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """bf16 autocast for the forward pass, no loss scaling.

    bf16 has fp32's exponent range, so MMEngine's ``AmpOptimWrapper``'s
    gradient scaler only costs time here: unscaling passes over every
    gradient and an inf check that synchronises with the GPU each step."""

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                'cuda', dtype=torch.bfloat16):
            yield


@OPTIM_WRAPPERS.register_module()
def AutoAmpOptimWrapper(optimizer, **kwargs):
    """The fastest safe precision for the machine: :class:`BF16OptimWrapper`
    on GPUs with bf16, MMEngine's ``AmpOptimWrapper`` (fp16, dynamic loss
    scaling) on older GPUs, a plain fp32 ``OptimWrapper`` without a GPU.
    Lets configs default to mixed precision and still run on CPUs."""
    if not torch.cuda.is_available():
        return OptimWrapper(optimizer=optimizer, **kwargs)
    if torch.cuda.is_bf16_supported():
        return BF16OptimWrapper(optimizer=optimizer, **kwargs)
    return AmpOptimWrapper(
        optimizer=optimizer, dtype='float16', loss_scale='dynamic', **kwargs)


def amp_optim_wrapper_cfg(optim_wrapper: dict) -> dict:
    """``--amp``: switch an optim-wrapper config to
    :func:`AutoAmpOptimWrapper` (a warning and fp32 without a GPU)."""
    if not torch.cuda.is_available():
        print_log('AMP needs a GPU; training in fp32', logger='current',
                  level=30)
    cfg = {k: v for k, v in optim_wrapper.items()
           if k not in ('dtype', 'loss_scale')}
    return dict(cfg, type='AutoAmpOptimWrapper')
