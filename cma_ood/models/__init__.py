"""cma_ood's models, in mmpretrain's layout:

* :mod:`.multimodal`: ``MultiModalClassifier`` (CLIP), the CLIP builder and
  the fast towers;
* :mod:`.classifiers`: ``OoDImageClassifier`` / ``OoDTimmClassifier`` (any
  mmpretrain or timm classifier scored by its logits: the classifier
  baselines);
* :mod:`.losses`: ``CMALoss``;
* :mod:`.ood_scorers`: the OoD scorers and, in ``ood_scorers.functional``,
  the pure score functions;
* :mod:`.probes`: ``LinearProbe``;
* :mod:`.backbones`: ``FeatureBackbone`` (a timm / mmpretrain model as a
  frozen feature extractor);
* :mod:`.utils`: data preprocessor, prompts, zero-shot ensembles, checks.
"""
from .backbones import FeatureBackbone
from .classifiers import OoDImageClassifier, OoDTimmClassifier
from .losses import CMALoss, cma_loss
from .multimodal import (MultiModalClassifier, build_clip,
                         encode_image_features, image_feature_dim,
                         list_clip_archs, load_clip_state_dict)
from .ood_scorers import (BaseOoDScorer, EnergyScorer, KNNScorer,
                          MahalanobisScorer, MaxLogitScorer, MCMScorer,
                          MSPScorer, NegLabelScorer, ProbeScorer,
                          ScorerContext)
from .ood_scorers.functional import (energy_score, feature_stats, knn_score,
                                     mahalanobis_fit, mahalanobis_score,
                                     max_logit_score, mcm_score,
                                     mine_negative_labels, msp_score,
                                     neglabel_score, normalize_features)
from .probes import LinearProbe
from .utils import (PLP_TEMPLATES, CLIPDataPreprocessor,
                    imagenet_first_synonyms, pseudo_labels,
                    zero_shot_ensemble_weights)

__all__ = [
    'build_clip', 'list_clip_archs', 'load_clip_state_dict', 'CMALoss',
    'cma_loss', 'MultiModalClassifier', 'mine_negative_labels',
    'neglabel_score', 'mcm_score', 'msp_score', 'max_logit_score',
    'energy_score', 'BaseOoDScorer', 'ScorerContext', 'MCMScorer',
    'MSPScorer', 'MaxLogitScorer', 'EnergyScorer', 'NegLabelScorer',
    'PLP_TEMPLATES', 'knn_score', 'mahalanobis_fit', 'mahalanobis_score',
    'pseudo_labels', 'zero_shot_ensemble_weights', 'KNNScorer',
    'MahalanobisScorer', 'ProbeScorer', 'LinearProbe', 'CLIPDataPreprocessor',
    'encode_image_features', 'image_feature_dim', 'feature_stats',
    'imagenet_first_synonyms', 'normalize_features', 'OoDImageClassifier',
    'OoDTimmClassifier', 'FeatureBackbone'
]
