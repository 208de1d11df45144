from .hooks import *  # noqa: F401,F403
from .model_wrapper import CompiledDistributedDataParallel
from .schedulers import (CMAWarmupCosineLR, PLPWarmupCosineLR, cma_lr_factor,
                         plp_lr_factor)
from .loops import (ResumableEpochBasedTrainLoop, SeededPipeline,
                    seed_pipelines)
from .optim_wrapper import (AutoAmpOptimWrapper, BF16OptimWrapper, amp_dtype,
                            amp_optim_wrapper_cfg)

__all__ = [
    'AutoAmpOptimWrapper', 'BF16OptimWrapper', 'amp_dtype',
    'amp_optim_wrapper_cfg', 'ResumableEpochBasedTrainLoop',
    'SeededPipeline', 'seed_pipelines', 'CompiledDistributedDataParallel',
    'CMAWarmupCosineLR', 'PLPWarmupCosineLR', 'cma_lr_factor', 'plp_lr_factor'
]
