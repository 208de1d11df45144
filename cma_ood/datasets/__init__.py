from .feature_dataset import CachedFeatureDataset
from .image_check import BrokenImageError, CheckedLoadImageFromFile
from .image_list import ImageListDataset
from .ood_concat import OoDConcatDataset
from .shapes import RedrawShape, ShapesDataset

__all__ = [
    'BrokenImageError', 'CachedFeatureDataset', 'CheckedLoadImageFromFile',
    'ImageListDataset', 'OoDConcatDataset', 'RedrawShape', 'ShapesDataset'
]
