"""Class names and prompt templates of the zero-shot classifier."""
from typing import List, Optional, Sequence, Union

from mmpretrain.datasets.categories import (CIFAR10_CATEGORIES,
                                            CIFAR100_CATEGORIES,
                                            IMAGENET_SIMPLE_CATEGORIES)

from .zero_shot import imagenet_first_synonyms


def _spaced(names):
    """Class names as words: mmpretrain's CIFAR-100 names join words with
    ``'_'`` (``'maple_tree'``), which CLIP's prompts spell with spaces."""
    return [name.replace('_', ' ') for name in names]


#: class-name lists by name (``model.classnames='imagenet'``): mmpretrain's
#: CLIP-style ImageNet names, or PLP's first synonyms of its ImageNet names;
#: mmpretrain's CIFAR-10 / CIFAR-100 names in its label order, with spaces
CLASSNAME_ALIASES = {
    'imagenet': lambda: list(IMAGENET_SIMPLE_CATEGORIES),
    'imagenet_first_synonym': imagenet_first_synonyms,
    'cifar10': lambda: _spaced(CIFAR10_CATEGORIES),
    'cifar100': lambda: _spaced(CIFAR100_CATEGORIES),
}


def resolve_classnames(
        classnames: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    """Turn ``None``, an alias (``'imagenet'``) or a sequence into a list."""
    if classnames is None:
        return None
    if isinstance(classnames, str):
        if classnames not in CLASSNAME_ALIASES:
            raise KeyError(f'Unknown class-name alias {classnames!r}; use one '
                           f'of {list(CLASSNAME_ALIASES)} or pass a list')
        return CLASSNAME_ALIASES[classnames]()
    names = [str(c) for c in classnames]
    if not names:
        raise ValueError('classnames is empty')
    return names


def check_template(template: str, what: str = 'template') -> str:
    """Validate a prompt template with exactly one ``{}`` placeholder."""
    try:
        filled = template.format('\0')
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f'{what} {template!r} must contain exactly one "{{}}" '
            f'placeholder for the class name ({err!r})') from None
    if filled.count('\0') != 1:
        raise ValueError(f'{what} {template!r} must contain exactly one '
                         '"{}" placeholder for the class name')
    return template
