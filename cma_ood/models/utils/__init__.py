"""Model-side helpers: the data preprocessor, prompts and class names, the
zero-shot prompt ensembles, input checks and weight fingerprints."""
from .data_preprocessor import CLIPDataPreprocessor
from .prompts import CLASSNAME_ALIASES, check_template, resolve_classnames
from .zero_shot import (PLP_TEMPLATES, first_synonyms,
                        imagenet_first_synonyms, pseudo_labels,
                        zero_shot_ensemble_weights)

__all__ = [
    'CLIPDataPreprocessor', 'CLASSNAME_ALIASES', 'check_template',
    'resolve_classnames', 'PLP_TEMPLATES', 'first_synonyms',
    'imagenet_first_synonyms', 'pseudo_labels', 'zero_shot_ensemble_weights'
]
