"""The on-disk format of cached CLIP image features (feature files).

A feature file is a ``torch.save``'d dict, written atomically (temporary
file + ``os.replace``) and read with ``torch.load(weights_only=True)`` (it
holds only tensors, strings, numbers, lists, dicts and ``None``):

============== ============================================================
key            content
============== ============================================================
``format``     ``'cma_ood.features'``
``version``    :data:`FEATURE_FORMAT_VERSION`
``feats``      ``(N, D)`` float16/float32 image features of the kind
               ``meta['feature']``, **not normalised**, in dataset order:
               ``'pre_projection'`` (the image tower's output before its
               final projection, PLP's ``proj=None``) or ``'embedding'``
``projection`` ``(D, E)`` float32 projection of the image tower mapping
               ``feats`` to embeddings (a ViT's ``proj``), or ``None`` when
               ``feats`` are embeddings already (``'embedding'`` features,
               and ResNet towers, whose pre-projection feature is the
               embedding)
``labels``     ``(N,)`` int64 ``gt_label`` of each sample, ``-1`` if none
               (OoD sets)
``sources``    ``(N,)`` int64 index into ``source_names``
``source_names`` list[str]: the ``ood_source`` names of an
               ``OoDConcatDataset``, else ``[<dataset type>]``
``pseudo_labels`` ``(N,)`` int64 zero-shot (PLP) labels, or ``None`` when
               the model had no class names
``zero_shot_weights`` ``(C, E)`` float32 zero-shot classifier the
               pseudo-labels come from, or ``None``
``classnames`` list[str] of the ``C`` ID classes, or ``None``
``meta``       dict: ``cache_key`` (sha256 of the image tower, the dataset
               config, its length, the feature kind and the storage
               dtype), ``feature``, ``image_encoder_sha256``,
               ``pseudo_label_key`` (sha256 of the text tower, class names,
               templates and context length), ``templates``, ``arch``,
               ``dataset`` (the dataset config as JSON), ``num_samples``,
               ``dim``, ``dtype``, ``created``, ``cma_ood_version``
============== ============================================================

Version 1 files (L2-normalised embeddings, no ``feature``) are refused with
a hint to re-extract; the extractor re-encodes over them.

:func:`load_feature_file` validates the layout and names the file in every
error, with a hint to (re-)run ``tools/extract_features.py``.
"""
import os.path as osp
from pathlib import Path
from typing import Optional, Union

import torch

from .checkpoint import atomic_torch_save

FEATURE_FORMAT = 'cma_ood.features'
#: bumped whenever the layout or the meaning of a key changes (2: raw
#: features of a recorded kind, ``projection``)
FEATURE_FORMAT_VERSION = 2
#: the feature kinds a file may hold (as ``cma_ood.models.multimodal.clip_vision``)
FEATURE_KINDS = ('pre_projection', 'embedding')
_HINT = ('create it with tools/extract_features.py CONFIG [CKPT] (see '
         'docs/probing.md)')


class FeatureFileError(ValueError):
    """A feature file is missing a key or holds inconsistent shapes."""


def save_feature_file(path: Union[str, Path], data: dict) -> str:
    """Write ``data`` (see the module doc) to ``path`` atomically.

    ``format`` and ``version`` are filled in; the layout is validated before
    writing. Returns the absolute path.
    """
    path = osp.abspath(osp.expanduser(str(path)))
    data = dict(data, format=FEATURE_FORMAT, version=FEATURE_FORMAT_VERSION)
    validate_feature_data(data, path)
    atomic_torch_save(data, path)
    return path


def load_feature_file(path: Union[str, Path],
                      map_location='cpu',
                      what: Optional[str] = None) -> dict:
    """Read and validate a feature file (``weights_only=True``).

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        what: who asks, for error messages (e.g. ``'MahalanobisScorer'``).

    Raises:
        FileNotFoundError: naming the file and how to create it.
        FeatureFileError: for a file that is not a valid feature file.
    """
    path = osp.expanduser(str(path))
    who = f'{what}: ' if what else ''
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{who}feature file not found: {path}; {_HINT}')
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001  (corrupt / foreign pickle)
        raise FeatureFileError(
            f'{who}cannot read feature file {path} ({type(err).__name__}: '
            f'{err}); {_HINT}') from err
    validate_feature_data(data, path, who)
    return data


def validate_feature_data(data, path: str = '<memory>', who: str = ''):
    """Check the layout of a feature dict; raise :class:`FeatureFileError`
    naming ``path`` and the problem."""

    def fail(msg):
        raise FeatureFileError(f'{who}invalid feature file {path}: {msg}')

    if not isinstance(data, dict) or data.get('format') != FEATURE_FORMAT:
        fail(f'not a {FEATURE_FORMAT} file; {_HINT}')
    if data.get('version') != FEATURE_FORMAT_VERSION:
        fail(f'format version {data.get("version")!r}, this cma_ood reads '
             f'version {FEATURE_FORMAT_VERSION}; re-extract it')
    for key in ('feats', 'labels', 'sources', 'source_names', 'meta'):
        if key not in data:
            fail(f'missing key {key!r}')
    feats = data['feats']
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 \
            or not feats.is_floating_point():
        fail('"feats" must be a 2-D floating tensor')
    n = feats.shape[0]
    for key in ('labels', 'sources', 'pseudo_labels'):
        value = data.get(key)
        if value is None and key == 'pseudo_labels':
            continue
        if not isinstance(value, torch.Tensor) or value.shape != (n, ) \
                or value.dtype != torch.long:
            fail(f'"{key}" must be an int64 tensor of shape ({n},)')
    if n and (data['sources'].min() < 0
              or data['sources'].max() >= len(data['source_names'])):
        fail('"sources" indexes outside "source_names"')
    meta = data['meta']
    if not isinstance(meta, dict) or meta.get('feature') not in FEATURE_KINDS:
        fail(f'meta["feature"] must be one of {list(FEATURE_KINDS)}, got '
             f'{meta.get("feature") if isinstance(meta, dict) else meta!r}')
    proj = data.get('projection')
    emb_dim = feats.shape[1]
    if proj is not None:
        if not isinstance(proj, torch.Tensor) or proj.dim() != 2 \
                or proj.shape[0] != feats.shape[1] \
                or not proj.is_floating_point():
            fail(f'"projection" must be a floating ({feats.shape[1]}, E) '
                 'tensor or None')
        emb_dim = proj.shape[1]
    weights = data.get('zero_shot_weights')
    if weights is not None and (weights.dim() != 2
                                or weights.shape[1] != emb_dim):
        fail(f'"zero_shot_weights" must be (C, {emb_dim})')
    return data


def feature_kind(data: dict) -> str:
    """The kind of features a loaded file holds (``meta['feature']``)."""
    return data['meta']['feature']
