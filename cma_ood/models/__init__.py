from .clip_builder import build_clip, list_clip_archs, load_clip_state_dict
from .clip_vision import encode_image_features, image_feature_dim
from .data_preprocessor import CLIPDataPreprocessor
from .feature_scorers import KNNScorer, MahalanobisScorer, ProbeScorer
from .feature_scores import (PLP_TEMPLATES, feature_stats,
                             imagenet_first_synonyms, knn_score,
                             mahalanobis_fit, mahalanobis_score,
                             normalize_features, pseudo_labels,
                             zero_shot_ensemble_weights)
from .linear_probe import LinearProbe
from .losses import CMALoss, cma_loss
from .multimodal_classifier import MultiModalClassifier
from .neglabel import mine_negative_labels, neglabel_score
from .neglabel_scorer import NegLabelScorer
from .ood_scores import energy_score, max_logit_score, mcm_score, msp_score
from .scorers import (BaseOoDScorer, EnergyScorer, MaxLogitScorer, MCMScorer,
                      MSPScorer)

__all__ = [
    'build_clip', 'list_clip_archs', 'load_clip_state_dict', 'CMALoss',
    'cma_loss', 'MultiModalClassifier', 'mine_negative_labels',
    'neglabel_score', 'mcm_score', 'msp_score', 'max_logit_score',
    'energy_score', 'BaseOoDScorer', 'MCMScorer', 'MSPScorer',
    'MaxLogitScorer', 'EnergyScorer', 'NegLabelScorer', 'PLP_TEMPLATES',
    'knn_score', 'mahalanobis_fit', 'mahalanobis_score', 'pseudo_labels',
    'zero_shot_ensemble_weights', 'KNNScorer', 'MahalanobisScorer',
    'ProbeScorer', 'LinearProbe', 'CLIPDataPreprocessor',
    'encode_image_features', 'image_feature_dim', 'feature_stats',
    'imagenet_first_synonyms', 'normalize_features'
]
