"""cma_ood: CLIP-based out-of-distribution detection as an MMPretrain plugin.

Importing the package registers its components in mmpretrain's registries
(``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``METRICS``, ``HOOKS``) and makes
MMEngine's local checkpoint loader safe under ``torch>=2.6`` (see
:mod:`cma_ood.utils.checkpoint`). Configs pull it in with
``custom_imports = dict(imports=['cma_ood'])``.
"""
from . import datasets, engine, evaluation, models, utils  # noqa: F401
from .version import __version__

__all__ = ['__version__']
