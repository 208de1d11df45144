from .ood_image_classifier import OoDImageClassifier

__all__ = ['OoDImageClassifier']
