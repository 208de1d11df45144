"""cma_ood: CLIP-based out-of-distribution detection as an MMPretrain plugin.

Importing the package registers its components in mmpretrain's registries
(``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``METRICS``, ``HOOKS``) and makes
MMEngine's local checkpoint loader safe under ``torch>=2.6`` (see
:mod:`cma_ood.utils.checkpoint`). Configs pull it in with
``custom_imports = dict(imports=['cma_ood'])``.
"""
import warnings

with warnings.catch_warnings():
    # Two warnings of the packages imported here that no cma_ood user can
    # act on, silenced for these imports only: openai-clip imports
    # setuptools' deprecated pkg_resources, and mmcv-lite (enough for
    # cma_ood) lacks the compiled MultiScaleDeformableAttention op.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    warnings.filterwarnings(
        'ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    from . import datasets, engine, evaluation, models, utils  # noqa: F401
from .version import __version__

__all__ = ['__version__']
