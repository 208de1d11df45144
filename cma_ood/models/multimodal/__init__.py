"""CLIP as an MMEngine model: the classifier, the CLIP builder and the fast
(numerically identical) text and image towers."""
from .classifier import CLIP_MEAN, CLIP_STD, MultiModalClassifier
from .clip_builder import (build_clip, cached_tokenize, list_clip_archs,
                           load_clip_state_dict, tokenize)
from .clip_vision import encode_image_features, image_feature_dim

__all__ = [
    'MultiModalClassifier', 'CLIP_MEAN', 'CLIP_STD', 'build_clip',
    'cached_tokenize', 'list_clip_archs', 'load_clip_state_dict', 'tokenize',
    'encode_image_features', 'image_feature_dim'
]
