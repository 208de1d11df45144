"""Pure OoD score functions (no state, no I/O): shapes and conventions in
each function's docstring; every score is ``(B,)``, higher = more ID."""
from .feature import (feature_stats, knn_score, mahalanobis_fit,
                      mahalanobis_score, normalize_features)
from .logit import (energy_score, l1_norm_score, max_logit_score, mcm_score,
                    msp_score)
from .neglabel import (label_affinity, mine_negative_labels,
                       neglabel_group_indices, neglabel_score)

__all__ = [
    'feature_stats', 'knn_score', 'mahalanobis_fit', 'mahalanobis_score',
    'normalize_features', 'energy_score', 'l1_norm_score', 'max_logit_score',
    'mcm_score', 'msp_score', 'label_affinity', 'mine_negative_labels',
    'neglabel_group_indices', 'neglabel_score'
]
