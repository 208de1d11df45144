from .checkpoint import TRUST_ENV_VAR, safe_torch_load
from .dist import gather_with_grad, get_dist_info_safe

__all__ = [
    'gather_with_grad', 'get_dist_info_safe', 'safe_torch_load',
    'TRUST_ENV_VAR'
]
