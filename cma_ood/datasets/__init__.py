from .collate import stacked_collate
from .feature_dataset import CachedFeatureDataset
from .image_check import BrokenImageError, CheckedLoadImageFromFile
from .image_list import ImageListDataset
from .ood_concat import OoDConcatDataset
from .shapes import RedrawShape, ShapesDataset
from .transforms import DecodeOnDevice

__all__ = [
    'BrokenImageError', 'CachedFeatureDataset', 'CheckedLoadImageFromFile',
    'DecodeOnDevice', 'ImageListDataset', 'OoDConcatDataset', 'RedrawShape',
    'ShapesDataset', 'stacked_collate'
]
