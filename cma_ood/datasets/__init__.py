from .ood_concat import OoDConcatDataset
from .shapes import ShapesDataset

__all__ = ['OoDConcatDataset', 'ShapesDataset']
