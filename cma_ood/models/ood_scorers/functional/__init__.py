"""Pure OoD score functions (no state, no I/O): shapes and conventions in
each function's docstring; every score is ``(B,)``, higher = more ID."""
from .adaneg import (adaneg_memory_update, adaneg_pools,
                     adaneg_sample_cosines, adaneg_select_negatives,
                     adaneg_stream, adaneg_stream_order, adaneg_task_proxies)
from .csp import (CSP_PHRASE_TEMPLATES, CSP_SUPERCLASSES, CSP_TEMPLATES,
                  conjugated_phrases, ensemble_embeddings, ensemble_prompts)
from .feature import (feature_stats, knn_score, mahalanobis_fit,
                      mahalanobis_score, normalize_features)
from .glmcm import glmcm_score, local_mcm_score
from .logit import (energy_score, l1_norm_score, max_logit_score, mcm_score,
                    msp_score)
from .neglabel import (label_affinity, mine_negative_labels,
                       neglabel_group_indices, neglabel_score)
from .neglabel import (neglabel_seed_group_indices, neglabel_seed_scores,
                       top_negative_indices)

__all__ = [
    'feature_stats', 'knn_score', 'mahalanobis_fit', 'mahalanobis_score',
    'normalize_features', 'energy_score', 'l1_norm_score', 'max_logit_score',
    'mcm_score', 'msp_score', 'label_affinity', 'mine_negative_labels',
    'neglabel_group_indices', 'neglabel_score',
    'neglabel_seed_group_indices', 'neglabel_seed_scores',
    'top_negative_indices', 'CSP_TEMPLATES', 'CSP_SUPERCLASSES',
    'CSP_PHRASE_TEMPLATES', 'conjugated_phrases', 'ensemble_prompts',
    'ensemble_embeddings',
    'adaneg_memory_update', 'adaneg_pools', 'adaneg_sample_cosines',
    'adaneg_select_negatives', 'adaneg_stream', 'adaneg_stream_order',
    'adaneg_task_proxies', 'glmcm_score', 'local_mcm_score',
]
