"""Probing and feature-space OoD scorers for ``MultiModalClassifier``.

They plug into the classifier's ``ood_scorers`` like MCM or NegLabel, so
their rows land in the same ``OoDMetric`` table:

* :class:`ProbeScorer`: MSP / max-logit / energy of a trained
  :class:`~cma_ood.models.LinearProbe` (PLP or supervised linear probing).
* :class:`MahalanobisScorer`: class means + shared covariance of cached
  training embeddings (optionally relative Mahalanobis).
* :class:`KNNScorer`: cosine similarity to the k nearest cached training
  embeddings.

Each loads its inputs in :meth:`prepare` (the classifier calls it before
the first scored batch) and, by default, checks that the cached features
come from the same image tower as the classifier's: a probe or Gaussian
fitted on other embeddings would score meaningless numbers.
"""
import logging
import os.path as osp
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ..utils.checkpoint import safe_torch_load
from ..utils.feature_file import load_feature_file
from .encoder_hash import image_tower_sha256
from .feature_scores import (background_fit, knn_score, mahalanobis_fit,
                             mahalanobis_score)
from .linear_probe import probe_logits
from .ood_scores import energy_score, max_logit_score, msp_score
from .scorers import BaseOoDScorer

_PROBE_SCORES = {'msp': 'MSP', 'max_logit': 'MaxLogit', 'energy': 'Energy'}


def _classifier_device(classifier: nn.Module) -> torch.device:
    return classifier.clip.logit_scale.device


def check_same_encoder(who: str, source: str, cached_sha: Optional[str],
                       classifier: nn.Module) -> None:
    """Raise if ``cached_sha`` (the image-tower hash stored with cached
    features) differs from the classifier's image tower."""
    if not cached_sha:
        print_log(
            f'{who}: {source} records no image-encoder hash; cannot check '
            'that it matches the classifier', logger='current',
            level=logging.WARNING)
        return
    own = image_tower_sha256(classifier.clip)
    if own != cached_sha:
        raise ValueError(
            f'{who}: {source} was computed from another image encoder '
            f'(sha256 {cached_sha[:12]}...) than this classifier\'s '
            f'({own[:12]}...). Extract the features with the weights you '
            'test (tools/extract_features.py CONFIG CKPT) and refit, or set '
            'check_encoder=False if this is intended')


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a work dir whose ``last_checkpoint`` names
    one (as MMEngine's ``CheckpointHook`` writes it)."""
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        pointer = osp.join(path, 'last_checkpoint')
        if not osp.isfile(pointer):
            raise FileNotFoundError(
                f'{path} is a directory without a last_checkpoint file; '
                'pass the probe checkpoint (.pth) itself')
        with open(pointer) as f:
            path = f.read().strip()
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'probe checkpoint not found: {path}; train the probe first '
            '(tools/train.py configs/plp/... or configs/linear-probe/...)')
    return path


class _FeatureScorer(BaseOoDScorer):
    """Shared loading of a feature file in :meth:`prepare`."""

    def __init__(self, train_features: str, check_encoder: bool = True,
                 name: Optional[str] = None):
        super().__init__(name)
        if not train_features:
            raise ValueError(f'{type(self).__name__}: train_features (a '
                             'feature file) is required')
        self.train_features = train_features
        self.check_encoder = check_encoder

    def _load(self, classifier: nn.Module) -> dict:
        who = type(self).__name__
        data = load_feature_file(self.train_features, what=who)
        if self.check_encoder:
            check_same_encoder(who, f'feature file {self.train_features}',
                               data['meta'].get('image_encoder_sha256'),
                               classifier)
        return data

    def _check_ready(self, attr: str) -> None:
        if getattr(self, attr) is None:
            raise RuntimeError(f'{type(self).__name__}.prepare(classifier) '
                               'must run before scoring')


@MODELS.register_module()
class ProbeScorer(BaseOoDScorer):
    """OoD score on the logits of a trained linear probe.

    The probe is applied to the classifier's L2-normalised image embeddings
    (the probe normalises its inputs, so this matches training on cached,
    normalised features): ``logits = x @ W.T + b``, then ``score``:

    * ``'msp'``: :func:`~cma_ood.models.msp_score` (PLP's score);
    * ``'max_logit'``: :func:`~cma_ood.models.max_logit_score`;
    * ``'energy'``: :func:`~cma_ood.models.energy_score` with
      ``temperature``.

    Args:
        probe_checkpoint (str): a ``LinearProbe`` checkpoint from
            ``tools/train.py`` (or its work dir: ``last_checkpoint`` is
            followed); read with ``weights_only=True``.
        score (str): ``'msp'``, ``'max_logit'`` or ``'energy'``.
        temperature (float): energy temperature.
        check_encoder (bool): require the features the probe was trained on
            to come from the classifier's image tower (recorded by
            ``CachedFeatureDataset`` in the checkpoint's ``dataset_meta``).
        name (str, optional): results key; ``'Probe-MSP'`` etc. by default.
    """

    def __init__(self,
                 probe_checkpoint: str,
                 score: str = 'msp',
                 temperature: float = 1.0,
                 check_encoder: bool = True,
                 name: Optional[str] = None):
        if score not in _PROBE_SCORES:
            raise ValueError(f'ProbeScorer: score must be one of '
                             f'{list(_PROBE_SCORES)}, got {score!r}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        super().__init__(name or f'Probe-{_PROBE_SCORES[score]}')
        self.probe_checkpoint = probe_checkpoint
        self.score = score
        self.temperature = float(temperature)
        self.check_encoder = check_encoder
        self.register_buffer('weight', None, persistent=False)
        self.register_buffer('bias', None, persistent=False)

    def prepare(self, classifier: nn.Module) -> None:
        path = resolve_checkpoint(self.probe_checkpoint)
        ckpt = safe_torch_load(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) \
            else None
        if not isinstance(state, dict) or 'fc.weight' not in state:
            raise KeyError(f'ProbeScorer: {path} holds no LinearProbe '
                           'weights ("fc.weight")')
        weight, bias = state['fc.weight'], state.get('fc.bias')
        num = getattr(classifier, 'num_classes', 0)
        if num and weight.shape[0] != num:
            raise ValueError(
                f'ProbeScorer: the probe {path} has {weight.shape[0]} '
                f'classes but the classifier has {num}')
        if self.check_encoder:
            meta = (ckpt.get('meta') or {}).get('dataset_meta') or {}
            check_same_encoder('ProbeScorer', f'the probe {path}',
                               meta.get('image_encoder_sha256'), classifier)
        device = _classifier_device(classifier)
        self.weight = weight.to(device, torch.float32)
        self.bias = None if bias is None else bias.to(device, torch.float32)
        print_log(f'ProbeScorer ({self.name}): {weight.shape[0]} x '
                  f'{weight.shape[1]} probe from {path}', logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        if self.weight is None:
            raise RuntimeError('ProbeScorer.prepare(classifier) must run '
                               'before scoring')
        with torch.autocast(image_embeds.device.type, enabled=False):
            logits = probe_logits(image_embeds, self.weight, self.bias)
            if self.score == 'msp':
                return msp_score(logits)
            if self.score == 'max_logit':
                return max_logit_score(logits)
            return energy_score(logits, self.temperature)


@MODELS.register_module()
class MahalanobisScorer(_FeatureScorer):
    """Negative minimum Mahalanobis distance to the training classes.

    :meth:`prepare` fits class means and a shared covariance
    (:func:`~cma_ood.models.feature_scores.mahalanobis_fit`, float64, on the
    classifier's device) to the cached training embeddings, skipping
    samples without a label; :meth:`forward` returns
    :func:`~cma_ood.models.feature_scores.mahalanobis_score` of the
    normalised image embeddings (the cache stores normalised ones too).

    Args:
        train_features (str): feature file of the ID training set
            (``tools/extract_features.py``).
        labels (str): ``'labels'`` (true labels, the classic method) or
            ``'pseudo_labels'`` (zero-shot labels).
        relative (bool): relative Mahalanobis (Ren et al. 2021): subtract
            the distance to one Gaussian fitted to all training embeddings.
        ridge (float): added to the covariance diagonals before the
            pseudo-inverse.
        chunk_size (int): test rows per step.
        check_encoder (bool): see :class:`ProbeScorer`.
        name (str, optional): ``'Mahalanobis'`` (``'RelMahalanobis'`` if
            relative) by default.
    """

    def __init__(self,
                 train_features: str,
                 labels: str = 'labels',
                 relative: bool = False,
                 ridge: float = 0.0,
                 chunk_size: int = 4096,
                 check_encoder: bool = True,
                 name: Optional[str] = None):
        if labels not in ('labels', 'pseudo_labels'):
            raise ValueError("MahalanobisScorer: labels must be 'labels' or "
                             f"'pseudo_labels', got {labels!r}")
        if ridge < 0:
            raise ValueError(f'ridge must be >= 0, got {ridge}')
        super().__init__(
            train_features, check_encoder,
            name or ('RelMahalanobis' if relative else 'Mahalanobis'))
        self.labels = labels
        self.relative = relative
        self.ridge = float(ridge)
        self.chunk_size = chunk_size
        for attr in ('means', 'precision', 'bg_mean', 'bg_precision'):
            self.register_buffer(attr, None, persistent=False)

    def prepare(self, classifier: nn.Module) -> None:
        data = self._load(classifier)
        labels = data[self.labels]
        if labels is None:
            raise ValueError(
                f'MahalanobisScorer: {self.train_features} has no '
                'pseudo-labels (the model had no class names when it was '
                "extracted); use labels='labels' or re-extract")
        keep = labels >= 0
        if not keep.any():
            raise ValueError(f'MahalanobisScorer: {self.train_features} has '
                             f'no labelled samples ({self.labels})')
        device = _classifier_device(classifier)
        feats = data['feats'][keep].to(device)
        labels = labels[keep].to(device)
        num_classes = len(data['classnames']) if data.get('classnames') \
            else int(labels.max()) + 1
        means, precision, classes = mahalanobis_fit(
            feats, labels, num_classes, self.ridge, skip_empty=True)
        if len(classes) < num_classes:
            print_log(
                f'MahalanobisScorer: {num_classes - len(classes)} of '
                f'{num_classes} classes have no training samples and are '
                'left out', logger='current', level=logging.WARNING)
        self.means, self.precision = means, precision
        if self.relative:
            self.bg_mean, self.bg_precision = background_fit(
                feats, self.ridge)
        print_log(
            f'MahalanobisScorer ({self.name}): fitted {len(classes)} class '
            f'means on {feats.shape[0]} embeddings of '
            f'{self.train_features}', logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        self._check_ready('means')
        with torch.autocast(image_embeds.device.type, enabled=False):
            return mahalanobis_score(
                F.normalize(image_embeds.float(), dim=-1), self.means,
                self.precision, self.relative, self.bg_mean,
                self.bg_precision, self.chunk_size)


@MODELS.register_module()
class KNNScorer(_FeatureScorer):
    """Cosine similarity to the k nearest training embeddings.

    :meth:`forward` returns :func:`~cma_ood.models.feature_scores.knn_score`
    of the normalised image embeddings against the cached training
    embeddings (all samples of the file, labelled or not), which
    :meth:`prepare` keeps on the classifier's device in ``dtype``.

    Args:
        train_features (str): feature file of the ID training set.
        k (int): number of neighbours.
        reduction (str): ``'kth'`` (k-th largest similarity) or ``'mean'``
            (mean of the k largest).
        train_chunk_size (int): training rows per similarity block.
        dtype (str): ``'float32'`` or ``'float16'`` storage of the training
            embeddings on the device (products are float32 either way).
        check_encoder (bool): see :class:`ProbeScorer`.
        name (str, optional): ``'kNN'`` by default.
    """

    def __init__(self,
                 train_features: str,
                 k: int = 50,
                 reduction: str = 'kth',
                 train_chunk_size: int = 65536,
                 dtype: str = 'float32',
                 check_encoder: bool = True,
                 name: Optional[str] = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f'KNNScorer: k must be a positive int, got {k!r}')
        if reduction not in ('kth', 'mean'):
            raise ValueError("KNNScorer: reduction must be 'kth' or 'mean', "
                             f'got {reduction!r}')
        if dtype not in ('float32', 'float16'):
            raise ValueError("KNNScorer: dtype must be 'float32' or "
                             f"'float16', got {dtype!r}")
        super().__init__(train_features, check_encoder, name or 'kNN')
        self.k = k
        self.reduction = reduction
        self.train_chunk_size = train_chunk_size
        self.dtype = dtype
        self.register_buffer('train_feats', None, persistent=False)

    def prepare(self, classifier: nn.Module) -> None:
        data = self._load(classifier)
        feats = data['feats']
        if feats.shape[0] < self.k:
            raise ValueError(
                f'KNNScorer: k={self.k} exceeds the {feats.shape[0]} '
                f'embeddings of {self.train_features}')
        device = _classifier_device(classifier)
        self.train_feats = F.normalize(
            feats.to(device).float(), dim=-1).to(getattr(torch, self.dtype))
        print_log(
            f'KNNScorer ({self.name}): {feats.shape[0]} training embeddings '
            f'from {self.train_features}, k={self.k} ({self.reduction})',
            logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        self._check_ready('train_feats')
        with torch.autocast(image_embeds.device.type, enabled=False):
            return knn_score(
                F.normalize(image_embeds.float(), dim=-1),
                self.train_feats,
                self.k,
                self.reduction,
                chunk_size=max(1, image_embeds.shape[0]),
                train_chunk_size=self.train_chunk_size)
