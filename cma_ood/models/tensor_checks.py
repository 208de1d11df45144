"""Input validation shared by the pure score, mining and probing functions."""
from typing import Optional

from torch import Tensor


def check_matrix(x: Tensor,
                 name: str,
                 shape: str = '(N, D)',
                 dim: Optional[int] = None) -> None:
    """Raise unless ``x`` is a 2-D floating ``torch.Tensor``.

    Args:
        x: the input.
        name: its name in the error messages.
        shape: how the messages describe the expected shape.
        dim: if given, the required size of dimension 1.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: not 2-D, or ``x.shape[1] != dim``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x)}')
    if x.dim() != 2:
        raise ValueError(
            f'{name} must be 2-D {shape}, got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating tensor, got {x.dtype}')
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f'{name} has feature dimension {x.shape[1]}, '
                         f'expected {dim}')
