from .checkpoint import TRUST_ENV_VAR, safe_torch_load
from .dist import all_gather_sizes, gather_with_grad, host_process_group

__all__ = [
    'all_gather_sizes', 'gather_with_grad', 'host_process_group',
    'safe_torch_load', 'TRUST_ENV_VAR'
]
