from .checkpoint import install_checkpoint_loader, safe_torch_load
from .dist import all_gather_sizes, gather_with_grad, host_process_group

__all__ = [
    'all_gather_sizes', 'gather_with_grad', 'host_process_group',
    'safe_torch_load', 'install_checkpoint_loader'
]
