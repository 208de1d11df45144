from .ood_concat import OoDConcatDataset
from .shapes import ShapesDataset

__all__ = ['OoDConcatDataset', 'ShapesDataset']
from .image_list import ImageListDataset  # noqa: E402

__all__ += ['ImageListDataset']
