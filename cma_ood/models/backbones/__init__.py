"""Image models other than CLIP as frozen feature extractors:
:class:`FeatureBackbone` (any timm or mmpretrain model) and the pure
helpers of :mod:`.functional`."""
from .feature_backbone import FEATURE_KINDS, FeatureBackbone, FeatureOutput
from .functional import (backbone_sha256, preprocessor_from_data_config,
                         read_state_dict, timm_data_config,
                         timm_eval_pipeline)

__all__ = [
    'FeatureBackbone', 'FeatureOutput', 'FEATURE_KINDS', 'backbone_sha256',
    'preprocessor_from_data_config', 'read_state_dict', 'timm_data_config',
    'timm_eval_pipeline'
]
