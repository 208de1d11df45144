"""Encode a dataset once with an image model and cache the features.

:func:`extract_features` runs the image encoder of a model over a
dataloader (distributed or not, with a progress bar) and writes a feature
file (format: :mod:`cma_ood.utils.feature_file`) with the un-normalised
image features -- by default the model's output *before* its last linear
map, as PLP (``feature='pre_projection'``; or its output,
``feature='embedding'``) -- labels, dataset sources and, for CLIP, PLP's
zero-shot pseudo-labels. Re-running with the same image encoder, data and
feature kind reuses the file without encoding a single image; when only the
text side changes (class names, templates, text tower) the pseudo-labels
alone are recomputed from the cached features.

Models (:func:`feature_source`):

* a :class:`~cma_ood.models.MultiModalClassifier` (CLIP): its image tower
  (``'pre_projection'``: before the projection; ``'embedding'``: the
  embedding), keyed by
  :func:`~cma_ood.models.utils.fingerprint.image_tower_sha256`; zero-shot
  pseudo-labels from its text tower;
* any model with the *feature interface*, e.g.
  :class:`~cma_ood.models.FeatureBackbone` (timm / mmpretrain models:
  ``'pre_projection'`` = pre-logits, ``'embedding'`` = logits)::

      model.data_preprocessor(batch, False) -> dict(inputs, data_samples)
      model.encode_features(images, feature) -> (B, D) un-normalised
      model.feature_projection(feature) -> (D, E) tensor or None
      model.image_fingerprint() -> str   # sha256: cache key and checks
      model.arch -> str                  # recorded in the file

  No pseudo-labels without a CLIP text tower: asking for them
  (``classnames``) is an error.

``tools/extract_features.py`` is the command-line front end.
"""
import hashlib
import itertools
import json
import logging
import os.path as osp
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.dist import (barrier, broadcast_object_list, collect_results,
                           get_dist_info)
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..models.multimodal.clip_builder import tokenize
from ..models.multimodal.clip_vision import (check_image_feature,
                                             encode_image_features,
                                             projection_matrix)
from ..models.utils.fingerprint import image_tower_sha256, text_tower_sha256
from ..models.utils.prompts import resolve_classnames
from ..models.utils.zero_shot import (PLP_TEMPLATES, pseudo_labels,
                                      zero_shot_ensemble_weights)
from ..utils.cache import default_cache_dir
from ..utils.feature_file import (FEATURE_FORMAT_VERSION, load_feature_file,
                                  save_feature_file)
from ..version import __version__

#: environment variable of the cma_ood cache root (as for NegLabel)
_DTYPES = {'float32': torch.float32, 'float16': torch.float16}


def default_feature_cache_dir() -> Path:
    """``$CMA_OOD_CACHE/features``, else ``~/.cache/cma_ood/features``."""
    return default_cache_dir('features')


def describe_dataset(dataset_cfg: Any, dataset) -> str:
    """The JSON (sorted keys) that identifies the data in the cache key.

    ``dataset_cfg`` is the config the dataset was built from (a dict;
    anything JSON cannot encode is written with ``str``). Without it, the
    dataset's type, ``metainfo`` and ``repr`` stand in, which may not tell
    apart two datasets of the same kind: pass the config where possible.
    """
    if dataset_cfg is None:
        desc = dict(
            type=type(dataset).__name__,
            metainfo=getattr(dataset, 'metainfo', None),
            repr=repr(dataset))
    else:
        desc = dict(dataset_cfg) if hasattr(dataset_cfg, 'keys') \
            else dataset_cfg
    return json.dumps(desc, sort_keys=True, default=str)


def feature_cache_key(image_sha: str, dataset_json: str, num_samples: int,
                      dtype: str, feature: str = 'pre_projection') -> str:
    """sha256 of what the features depend on: the image tower (its hash),
    the dataset description, its length, the feature kind and the storage
    dtype (and the file format version)."""
    meta = dict(
        format=FEATURE_FORMAT_VERSION,
        image_encoder=image_sha,
        dataset=dataset_json,
        num_samples=int(num_samples),
        dtype=dtype,
        feature=check_image_feature(feature, 'feature_cache_key'),
        normalised=False)
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()) \
        .hexdigest()


def pseudo_label_key(model, templates: Sequence[str]) -> str:
    """sha256 of what the pseudo-labels depend on besides the embeddings:
    text tower, class names, templates and context length."""
    meta = dict(
        text_encoder=text_tower_sha256(model.clip),
        classnames=list(model.classnames),
        templates=list(templates),
        context_length=int(model.context_length))
    # open_clip models' own tokenizers (openai-clip's keys stay as they were)
    tokenizer = getattr(getattr(model, 'tokenizer', None), 'name', 'clip')
    if tokenizer != 'clip':
        meta['tokenizer'] = tokenizer
    return hashlib.sha256(
        json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()) \
        .hexdigest()


def zero_shot_weights(model, templates: Sequence[str] = PLP_TEMPLATES
                      ) -> torch.Tensor:
    """The classifier's ensemble zero-shot weights ``(C, D)`` (float32)."""
    device = model.clip.logit_scale.device

    def encode(prompts):  # with the model's own tokenizer (open_clip's)
        tokens = model.tokenize(prompts) if hasattr(model, 'tokenize') \
            else tokenize(prompts, model.context_length)
        return model.encode_prompts(tokens.to(device))

    return zero_shot_ensemble_weights(encode, model.classnames, templates)


class _CLIPFeatures:
    """The feature source of a ``MultiModalClassifier`` (CLIP towers)."""
    has_text = True

    def __init__(self, model):
        self.model = model

    @property
    def arch(self) -> str:
        return str(getattr(self.model, 'arch', ''))

    def device(self) -> torch.device:
        return self.model.clip.logit_scale.device

    def encode(self, images: torch.Tensor, feature: str) -> torch.Tensor:
        return encode_features(self.model, images, feature)

    def projection(self, feature: str) -> Optional[torch.Tensor]:
        if feature != 'pre_projection':
            return None
        return projection_matrix(self.model.clip.visual)

    def fingerprint(self) -> str:
        return image_tower_sha256(self.model.clip)


class _InterfaceFeatures(_CLIPFeatures):
    """The feature source of a model with the feature interface (see the
    module doc): pseudo-labels only for a CLIP model (``clip`` and
    ``encode_prompts``) that also provides the interface."""

    @property
    def has_text(self) -> bool:
        return hasattr(self.model, 'clip') and callable(
            getattr(self.model, 'encode_prompts', None))

    def device(self) -> torch.device:
        for tensor in itertools.chain(self.model.parameters(),
                                      self.model.buffers()):
            return tensor.device
        return torch.device('cpu')

    def encode(self, images: torch.Tensor, feature: str) -> torch.Tensor:
        return self.model.encode_features(images, feature)

    def projection(self, feature: str) -> Optional[torch.Tensor]:
        return self.model.feature_projection(feature)

    def fingerprint(self) -> str:
        return str(self.model.image_fingerprint())


#: the methods of the feature interface (see the module doc)
FEATURE_INTERFACE = ('encode_features', 'feature_projection',
                     'image_fingerprint')


def feature_source(model):
    """How :func:`extract_features` encodes with ``model``: a model with
    the feature interface (:data:`FEATURE_INTERFACE`), or a
    ``MultiModalClassifier`` (CLIP). The object has ``has_text``, ``arch``,
    ``device()``, ``encode(images, feature)``, ``projection(feature)`` and
    ``fingerprint()``.

    Raises:
        TypeError: for any other model, naming what it lacks.
    """
    if all(callable(getattr(model, name, None))
           for name in FEATURE_INTERFACE):
        return _InterfaceFeatures(model)
    if hasattr(model, 'clip') and hasattr(model, 'encode_image'):
        return _CLIPFeatures(model)
    raise TypeError(
        f'extract_features: {type(model).__name__} is neither a CLIP '
        'MultiModalClassifier nor a model with the feature interface '
        f'{list(FEATURE_INTERFACE)}; for a timm or mmpretrain model use '
        "dict(type='FeatureBackbone', ...)")


def supports_pseudo_labels(model) -> bool:
    """Whether ``model`` can give zero-shot pseudo-labels (a CLIP model
    with a text tower)."""
    return feature_source(model).has_text


def _sample_label(ds) -> int:
    gt = ds.get('gt_label') if hasattr(ds, 'get') else None
    if gt is None or gt.numel() == 0:
        return -1
    return int(gt.reshape(-1)[0])


def _autocast(device: torch.device, amp: bool):
    if not amp or device.type != 'cuda':
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() \
        else torch.float16
    return torch.autocast('cuda', dtype=dtype)


def encode_features(model, images: torch.Tensor,
                    feature: str = 'pre_projection') -> torch.Tensor:
    """Un-normalised image features ``(B, D)`` of a CLIP classifier's
    preprocessed batch: ``feature='embedding'`` is ``model.encode_image``;
    ``'pre_projection'`` the tower's output before its projection (see
    :func:`~cma_ood.models.multimodal.clip_vision.encode_image_features`),
    through the fast ViT forward when the model uses it (for towers without
    a separate projection, i.e. ResNets, ``model.encode_image`` as
    well)."""
    check_image_feature(feature, 'encode_features')
    if feature == 'embedding' or projection_matrix(model.clip.visual) is None:
        # ResNet towers: the pre-projection features are the embeddings
        return model.encode_image(images)
    return encode_image_features(
        model.clip, images, feature,
        fast=bool(getattr(model, 'fast_image_tower', False)))


@torch.no_grad()
def encode_dataset(model, dataloader, dtype: torch.dtype = torch.float32,
                   amp: bool = False, show_progress: bool = True,
                   default_source: str = 'data',
                   tmpdir: Optional[str] = None,
                   feature: str = 'pre_projection'
                   ) -> Optional[Tuple[torch.Tensor, torch.Tensor, list]]:
    """Encode every image of ``dataloader``; gather across ranks.

    Each rank encodes its sampler's share; the results are collected with
    :func:`mmengine.dist.collect_results` (which relies on
    ``DefaultSampler``'s rank-interleaved order and drops its padding), so
    the rows follow the dataset order. ``tmpdir`` is where the ranks leave
    their parts for rank 0 (a directory all ranks can see; MMEngine's
    ``.dist_test/`` under the working directory when ``None``).

    Returns:
        On rank 0: ``(feats (N, D) dtype, labels (N,) int64, sources
        list[str])`` with the un-normalised ``feature`` rows (see
        :func:`encode_features`, or the model's ``encode_features``);
        ``None`` on other ranks.
    """
    rank, world_size = get_dist_info()
    if getattr(dataloader.sampler, 'shuffle', False):
        raise ValueError('extract_features needs a dataloader without '
                         'shuffling (sampler=dict(type="DefaultSampler", '
                         'shuffle=False)) to keep the dataset order')
    encoder = feature_source(model)
    dataset = dataloader.dataset
    num_samples = len(dataset)
    was_training = model.training
    model.eval()
    device = encoder.device()
    bar = ProgressBar(len(dataloader)) if show_progress and rank == 0 \
        else None
    part = []
    try:
        for batch in dataloader:
            data = model.data_preprocessor(batch, False)
            with _autocast(device, amp):
                feats = encoder.encode(data['inputs'], feature)
            rows = feats.float().to(dtype).cpu().numpy()
            for i, ds in enumerate(data['data_samples']):
                source = ds.metainfo.get('ood_source', default_source)
                part.append((rows[i], _sample_label(ds), str(source)))
            if bar is not None:
                bar.update()
    finally:
        model.train(was_training)
    if world_size > 1:
        part = collect_results(part, num_samples, device='cpu',
                               tmpdir=tmpdir)
        if rank != 0:
            return None
    if len(part) != num_samples:
        raise RuntimeError(
            f'extract_features: got {len(part)} embeddings for a dataset of '
            f'{num_samples} samples; use DefaultSampler(shuffle=False, '
            'round_up=True) and drop_last=False')
    feats = torch.from_numpy(np.stack([p[0] for p in part]))
    labels = torch.tensor([p[1] for p in part], dtype=torch.long)
    return feats, labels, [p[2] for p in part]


def _try_load(path: str, key: str) -> Optional[dict]:
    """The cached features at ``path`` if they match ``key``."""
    if not osp.isfile(path):
        return None
    try:
        data = load_feature_file(path)
    except (ValueError, OSError) as err:
        print_log(f'Features: ignoring unreadable cache {path} ({err})',
                  logger='current', level=logging.WARNING)
        return None
    if data['meta'].get('cache_key') != key:
        print_log(
            f'Features: {path} holds features of another model or dataset; '
            're-extracting', logger='current', level=logging.WARNING)
        return None
    return data


def extract_features(model,
                     dataloader,
                     out_file: Union[None, str, Path] = None,
                     cache_dir: Union[None, str, Path] = None,
                     dataset_cfg: Any = None,
                     templates: Optional[Sequence[str]] = PLP_TEMPLATES,
                     dtype: str = 'float32',
                     amp: bool = False,
                     show_progress: bool = True,
                     force: bool = False,
                     feature: str = 'pre_projection',
                     classnames: Union[None, str, Sequence[str]] = None
                     ) -> str:
    """Encode ``dataloader``'s images once and cache them in a feature file.

    The cache key (:func:`feature_cache_key`) covers the image-tower
    weights, ``dataset_cfg`` (JSON with sorted keys), the dataset length,
    ``feature`` and ``dtype`` (and the file format version, so files of an
    older format are re-extracted). With ``out_file`` the features go to
    that fixed path (a file there with another key is replaced); otherwise
    to
    ``<cache_dir>/features_<key[:24]>.pt`` (``cache_dir`` defaults to
    :func:`default_feature_cache_dir`). A file with the same key is reused
    without encoding anything ("loaded from cache" is logged).

    Pseudo-labels (CLIP models): with class names (``classnames``, set on
    the model; else the model's; else ``dataset.metainfo['classes']``, as
    ``ClassNamesHook`` does) and ``templates`` not ``None``, the file also
    holds the argmax of the ensemble zero-shot classifier over the *stored*
    features, projected with the tower's projection where they are
    pre-projection ones (``pseudo_labels``), its weights and the class
    names. They are keyed separately (:func:`pseudo_label_key`) and
    recomputed from the cached features when only the text side changed.
    A model without a text tower (the feature interface, e.g.
    ``FeatureBackbone``) gets none: ``templates`` are ignored, and
    ``classnames`` is an error.

    Distributed: every rank encodes its share, rank 0 writes the file, and
    all ranks return after a barrier.

    Args:
        model: a ``MultiModalClassifier`` (``encode_image``,
            ``data_preprocessor``; ``classnames``/``encode_prompts`` for the
            pseudo-labels) or a model with the feature interface (see the
            module doc, e.g. ``FeatureBackbone``), already on its device.
        dataloader: a non-shuffling dataloader over the images.
        out_file: fixed output path, or ``None`` for content addressing.
        cache_dir: directory of content-addressed files.
        dataset_cfg: the dataset's config, for the cache key (see
            :func:`describe_dataset`).
        templates: pseudo-label prompt ensemble (default
            :data:`~cma_ood.models.utils.zero_shot.PLP_TEMPLATES`); ``None``
            skips the pseudo-labels.
        dtype: storage dtype of the features, ``'float32'`` or
            ``'float16'`` (half the disk and memory; pseudo-labels are
            computed from the stored values either way).
        amp: encode under CUDA autocast (bf16 where supported).
        show_progress: progress bar on rank 0.
        force: re-extract even if a matching file exists.
        feature: ``'pre_projection'`` (PLP; a ``FeatureBackbone``'s
            pre-logits) or ``'embedding'`` (its logits).
        classnames: class names for the pseudo-labels: a list or a name of
            :data:`~cma_ood.models.utils.prompts.CLASSNAME_ALIASES` (e.g.
            ``'imagenet_first_synonym'``, PLP's ImageNet names); ``None``
            keeps the model's.

    Returns:
        The absolute path of the feature file.
    """
    if dtype not in _DTYPES:
        raise ValueError(f'dtype must be one of {list(_DTYPES)}, got '
                         f'{dtype!r}')
    check_image_feature(feature, 'extract_features')
    encoder = feature_source(model)
    rank, world_size = get_dist_info()
    dataset = dataloader.dataset
    num_samples = len(dataset)
    if num_samples == 0:
        raise ValueError(f'extract_features: {type(dataset).__name__} is '
                         'empty')
    if not encoder.has_text:
        if classnames is not None:
            raise ValueError(
                f'extract_features: {encoder.arch or type(model).__name__} '
                'has no text tower, so there are no zero-shot pseudo-labels '
                '(PLP needs a CLIP model); drop classnames '
                '(feature_extraction.classnames / templates) and train the '
                "probe on the true labels (target='labels')")
        templates = None
    if classnames is not None:
        model.set_classnames(resolve_classnames(classnames))
    if getattr(model, 'classnames', None) is None and templates is not None:
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        if classes:
            model.set_classnames(list(classes))
    dataset_json = describe_dataset(dataset_cfg, dataset)
    image_sha = encoder.fingerprint()
    key = feature_cache_key(image_sha, dataset_json, num_samples, dtype,
                            feature)
    if out_file is not None:
        path = osp.abspath(osp.expanduser(str(out_file)))
    else:
        root = default_feature_cache_dir() if cache_dir is None \
            else Path(osp.expanduser(str(cache_dir)))
        path = osp.abspath(str(root / f'features_{key[:24]}.pt'))

    cached = None
    if rank == 0 and not force:
        cached = _try_load(path, key)
    hit = [cached is not None]
    if world_size > 1:
        broadcast_object_list(hit)
    if hit[0]:
        if rank == 0:
            print_log(f'Features: loaded from cache {path}',
                      logger='current')
        data = cached
    else:
        print_log(
            f'Features: encoding {num_samples} images of '
            f'{type(dataset).__name__} on {world_size} process(es)',
            logger='current')
        default_source = type(dataset).__name__
        encoded = encode_dataset(model, dataloader, _DTYPES[dtype], amp,
                                 show_progress, default_source,
                                 tmpdir=f'{path}.parts-{key[:12]}',
                                 feature=feature)
        data = None
        if rank == 0:
            feats, labels, sources = encoded
            names = list(dict.fromkeys(sources))
            index = {n: i for i, n in enumerate(names)}
            proj = encoder.projection(feature)
            data = dict(
                feats=feats,
                projection=None if proj is None else
                proj.detach().float().cpu().clone(),
                labels=labels,
                sources=torch.tensor([index[s] for s in sources],
                                     dtype=torch.long),
                source_names=names,
                pseudo_labels=None,
                zero_shot_weights=None,
                classnames=None,
                meta=dict(
                    cache_key=key,
                    feature=feature,
                    image_encoder_sha256=image_sha,
                    pseudo_label_key=None,
                    templates=None,
                    arch=encoder.arch,
                    dataset=dataset_json,
                    num_samples=num_samples,
                    dim=int(feats.shape[1]),
                    dtype=dtype,
                    created=time.strftime('%Y-%m-%d %H:%M:%S'),
                    cma_ood_version=__version__))
            if not encoder.has_text:
                data['meta']['no_pseudo_labels'] = (
                    f'{encoder.arch} has no text tower: zero-shot '
                    'pseudo-labels (PLP) need a CLIP model; train on the '
                    "true labels (target='labels')")
    if rank == 0:
        dirty = not hit[0]
        if _update_pseudo_labels(model, data, templates):
            dirty = True
        if dirty:
            save_feature_file(path, data)
            print_log(
                f'Features: wrote {num_samples} x {data["feats"].shape[1]} '
                f'{feature} features to {path}', logger='current')
    if world_size > 1:
        barrier()
    return path


def _update_pseudo_labels(model, data: dict,
                          templates: Optional[Sequence[str]]) -> bool:
    """Set ``data``'s pseudo-labels for ``model`` and ``templates``;
    return whether anything changed."""
    if templates is None or getattr(model, 'classnames', None) is None:
        want = None
    else:
        templates = list(templates)
        want = pseudo_label_key(model, templates)
    if data['meta'].get('pseudo_label_key') == want:
        return False
    if want is None:
        data.update(pseudo_labels=None, zero_shot_weights=None,
                    classnames=None)
        data['meta'].update(pseudo_label_key=None, templates=None)
        return True
    was_training = model.training
    model.eval()
    try:
        weights = zero_shot_weights(model, templates).cpu()
    finally:
        model.train(was_training)
    data.update(
        pseudo_labels=pseudo_labels(data['feats'], weights,
                                    projection=data.get('projection')),
        zero_shot_weights=weights,
        classnames=list(model.classnames))
    data['meta'].update(pseudo_label_key=want, templates=templates)
    print_log(
        f'Features: zero-shot pseudo-labels of {len(model.classnames)} '
        f'classes from {len(templates)} prompt templates', logger='current')
    return True
