from .ood_image_classifier import OoDImageClassifier, OoDTimmClassifier

__all__ = ['OoDImageClassifier', 'OoDTimmClassifier']
