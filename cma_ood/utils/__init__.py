from .checkpoint import TRUST_ENV_VAR, safe_torch_load
from .dist import all_gather_sizes, gather_with_grad

__all__ = [
    'all_gather_sizes', 'gather_with_grad', 'safe_torch_load',
    'TRUST_ENV_VAR'
]
