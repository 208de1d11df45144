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


def check_positive_int(value, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


def check_choice(value, choices, name: str):
    """``value`` if it is one of ``choices``, else ValueError."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {list(choices)}, got '
                         f'{value!r}')
    return value
