"""Probing and feature-space OoD scorers for ``MultiModalClassifier``.

They plug into the classifier's ``ood_scorers`` like MCM or NegLabel, so
their rows land in the same ``OoDMetric`` table:

* :class:`ProbeScorer`: MSP / max-logit / energy / l1-norm of the logits of
  a trained :class:`~cma_ood.models.LinearProbe` (PLP or supervised linear
  probing).
* :class:`MahalanobisScorer`: class means + shared covariance of cached
  training features (optionally relative Mahalanobis).
* :class:`KNNScorer`: cosine similarity to the k nearest cached training
  features.

Each loads its inputs in :meth:`prepare` (the classifier calls it before
the first scored batch) and, by default, checks that the cached features
come from the same image tower as the classifier's: a probe or Gaussian
fitted on other features would score meaningless numbers.

Test-time features. The classifier hands its scorers the L2-normalised
image *embeddings*. Scorers fitted on pre-projection features (PLP's
features, the default of ``tools/extract_features.py``) or on
un-normalised ones read the tower's pre-projection output of the same
forward through a :class:`~cma_ood.models.multimodal.clip_vision.FeatureTap` (a
forward hook on the ViT's ``ln_post``, or on a ResNet tower), and check on
every batch that it belongs to the batch (its projection must give back
the embeddings).
"""
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ...utils.feature_file import load_feature_file
from ..multimodal.clip_vision import (check_image_feature, feature_tap,
                                      image_feature_dim, projection_matrix)
from .base import BaseOoDScorer, ScorerContext
from .functional.feature import (COVARIANCES, INVERSES, background_fit,
                                 check_normalize, feature_stats, knn_score,
                                 mahalanobis_fit, mahalanobis_score,
                                 normalize_features)

#: min cosine between the embeddings the classifier passes and the
#: projection of the captured pre-projection features of the same batch
_MATCH_COS = 0.999


def check_same_encoder(who: str, source: str, cached_sha: Optional[str],
                       context: ScorerContext) -> None:
    """Raise if ``cached_sha`` (the image-tower hash stored with cached
    features) differs from the model's image tower."""
    if not cached_sha:
        print_log(
            f'{who}: {source} records no image-encoder hash; cannot check '
            'that it matches the classifier', logger='current',
            level=logging.WARNING)
        return
    own = context.image_fingerprint()
    if own != cached_sha:
        raise ValueError(
            f'{who}: {source} was computed from another image encoder '
            f'(sha256 {cached_sha[:12]}...) than this classifier\'s '
            f'({own[:12]}...). Extract the features with the weights you '
            'test (tools/extract_features.py CONFIG CKPT) and refit, or set '
            'check_encoder=False if this is intended')


class TestFeatures:
    """The features a scorer was fitted on, for the classifier's batch.

    ``feature='embedding'`` with ``raw=False`` (a scorer that L2-normalises
    anyway) uses the normalised embeddings the classifier passes. Otherwise
    the un-normalised features come from the tower's
    :class:`~cma_ood.models.multimodal.clip_vision.FeatureTap`: ``'pre_projection'``
    as captured, ``'embedding'`` as their projection. Every batch is
    checked: the tap must have seen a new forward of the batch's size whose
    projection matches the embeddings (cosine >= 0.999), else a
    ``RuntimeError`` explains (e.g. a compiled image forward that skipped
    the hook).

    Args:
        who: the scorer, for messages.
        context: the model's :class:`ScorerContext`.
        feature: ``'pre_projection'`` or ``'embedding'``.
        raw: whether the scorer needs un-normalised features.
    """
    __test__ = False  # not a pytest test class

    def __init__(self, who: str, context: ScorerContext, feature: str,
                 raw: bool):
        self.who = who
        self.feature = check_image_feature(feature, who)
        visual = context.image_tower
        self.direct = feature == 'embedding' and not raw
        self.tap = None if self.direct else feature_tap(visual)
        self.projection = projection_matrix(visual)
        self._seen = None if self.tap is None else self.tap.step

    def __call__(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if self.direct:
            return image_embeds.float()
        tap = self.tap
        value = tap.value
        if tap.step == self._seen or value is None \
                or value.shape[0] != image_embeds.shape[0]:
            raise RuntimeError(
                f'{self.who}: the image tower\'s pre-projection features of '
                'this batch were not captured (the forward hook did not '
                'run). If the classifier compiles its image forward '
                '(compile=True / "auto" on a GPU), build it with '
                'compile=False for these scorers')
        self._seen = tap.step
        pre = value.float()
        emb = pre if self.projection is None else \
            pre @ self.projection.detach().float()
        if getattr(tap, 'verified_step', None) != tap.step:
            cos = (F.normalize(emb, dim=-1) * image_embeds.float()).sum(-1)
            if bool((cos < _MATCH_COS).any()):
                raise RuntimeError(
                    f'{self.who}: the captured pre-projection features do '
                    'not belong to the image embeddings of this batch '
                    f'(cosine {float(cos.min()):.4f} after projection); was '
                    'the image tower run on other images in between?')
            tap.verified_step = tap.step
        return pre if self.feature == 'pre_projection' else emb


class _FeatureScorer(BaseOoDScorer):
    """Shared loading of a feature file in :meth:`prepare`."""

    def __init__(self, train_features: str, check_encoder: bool = True,
                 name: Optional[str] = None,
                 normalize: Optional[str] = None,
                 feature: Optional[str] = None):
        super().__init__(name)
        if not train_features:
            raise ValueError(f'{type(self).__name__}: train_features (a '
                             'feature file) is required')
        check_normalize(normalize, type(self).__name__)
        if feature is not None:
            check_image_feature(feature, type(self).__name__)
        self.train_features = train_features
        self.check_encoder = check_encoder
        self.normalize = normalize
        self.feature = feature
        self._features: Optional[TestFeatures] = None
        for attr in ('feat_mean', 'feat_std'):
            self.register_buffer(attr, None, persistent=False)

    def _load(self, context: ScorerContext) -> dict:
        who = type(self).__name__
        data = load_feature_file(self.train_features, what=who)
        if self.check_encoder:
            check_same_encoder(who, f'feature file {self.train_features}',
                               data['meta'].get('image_encoder_sha256'),
                               context)
        kind = data['meta']['feature']
        if self.feature is not None and kind != self.feature:
            raise ValueError(
                f'{who}: {self.train_features} holds {kind} features, the '
                f'scorer expects {self.feature}; re-extract with '
                f'tools/extract_features.py --feature {self.feature}')
        dim = image_feature_dim(context.image_tower, kind)
        if data['feats'].shape[1] != dim:
            raise ValueError(
                f'{who}: {self.train_features} holds '
                f'{data["feats"].shape[1]}-d features, the classifier\'s '
                f'{kind} features are {dim}-d')
        self._features = TestFeatures(who, context, kind,
                                      raw=self._needs_raw())
        return data

    def _needs_raw(self) -> bool:
        return self.normalize != 'l2'

    def _normalized(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats`` after ``normalize`` (z-score: the training stats)."""
        return normalize_features(feats, self.normalize, self.feat_mean,
                                  self.feat_std)

    def _fit_stats(self, feats: torch.Tensor, device) -> None:
        """Training mean / std for ``normalize='zscore'``, on ``device``."""
        if self.normalize == 'zscore':
            mean, std = feature_stats(feats)
            self.feat_mean, self.feat_std = mean.to(device), std.to(device)

    def _test_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self._normalized(self._features(image_embeds))

    def _check_ready(self, attr: str) -> None:
        if getattr(self, attr) is None or self._features is None:
            raise RuntimeError(f'{type(self).__name__}.prepare(context) '
                               'must run before scoring')


@MODELS.register_module()
class MahalanobisScorer(_FeatureScorer):
    """Negative minimum Mahalanobis distance to the training classes.

    :meth:`prepare` fits class means and a shared covariance
    (:func:`~cma_ood.models.ood_scorers.functional.feature.mahalanobis_fit`, float64, on the
    classifier's device) to the cached training features after
    ``normalize``, skipping samples without a label; :meth:`forward`
    returns :func:`~cma_ood.models.ood_scorers.functional.feature.mahalanobis_score` of the
    batch's features of the same kind, normalised the same way. Defaults
    follow PLP's ``MahaDist``: the file's (pre-projection) features as they
    are, the mean of the per-class unbiased covariances, ``inv``. (The
    distance is invariant to z-scoring, up to rounding.)

    Args:
        train_features (str): feature file of the ID training set
            (``tools/extract_features.py``).
        labels (str): ``'labels'`` (true labels, the classic method) or
            ``'pseudo_labels'`` (zero-shot labels).
        relative (bool): relative Mahalanobis (Ren et al. 2021): subtract
            the distance to one Gaussian fitted to all training features.
        normalize (str | None): ``None``, ``'zscore'`` (training mean and
            unbiased std) or ``'l2'`` (unit rows).
        covariance (str): ``'class_mean'`` (PLP) or ``'pooled'`` (tied ML
            covariance, Lee et al. 2018).
        inverse (str): ``'inv'`` (PLP) or ``'pinv'``.
        ridge (float): added to the covariance diagonals before inverting.
        feature (str, optional): the kind of features the file must hold.
        chunk_size (int): test rows per step.
        check_encoder (bool): see :class:`ProbeScorer`.
        name (str, optional): ``'Mahalanobis'`` (``'RelMahalanobis'`` if
            relative) by default.
    """

    def __init__(self,
                 train_features: str,
                 labels: str = 'labels',
                 relative: bool = False,
                 normalize: Optional[str] = None,
                 covariance: str = 'class_mean',
                 inverse: str = 'inv',
                 ridge: float = 0.0,
                 feature: Optional[str] = None,
                 chunk_size: int = 4096,
                 check_encoder: bool = True,
                 name: Optional[str] = None):
        if labels not in ('labels', 'pseudo_labels'):
            raise ValueError("MahalanobisScorer: labels must be 'labels' or "
                             f"'pseudo_labels', got {labels!r}")
        if covariance not in COVARIANCES:
            raise ValueError(f'MahalanobisScorer: covariance must be one of '
                             f'{list(COVARIANCES)}, got {covariance!r}')
        if inverse not in INVERSES:
            raise ValueError(f'MahalanobisScorer: inverse must be one of '
                             f'{list(INVERSES)}, got {inverse!r}')
        if ridge < 0:
            raise ValueError(f'ridge must be >= 0, got {ridge}')
        super().__init__(
            train_features, check_encoder,
            name or ('RelMahalanobis' if relative else 'Mahalanobis'),
            normalize, feature)
        self.labels = labels
        self.relative = relative
        self.covariance = covariance
        self.inverse = inverse
        self.ridge = float(ridge)
        self.chunk_size = chunk_size
        for attr in ('means', 'precision', 'bg_mean', 'bg_precision'):
            self.register_buffer(attr, None, persistent=False)

    def prepare(self, context: ScorerContext) -> None:
        data = self._load(context)
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
        device = context.device
        feats = data['feats'][keep].to(device)
        labels = labels[keep].to(device)
        self._fit_stats(feats, device)
        feats = self._normalized(feats)
        num_classes = len(data['classnames']) if data.get('classnames') \
            else int(labels.max()) + 1
        means, precision, classes = mahalanobis_fit(
            feats, labels, num_classes, self.ridge, skip_empty=True,
            covariance=self.covariance, inverse=self.inverse)
        if len(classes) < num_classes:
            print_log(
                f'MahalanobisScorer: {num_classes - len(classes)} of '
                f'{num_classes} classes have too few training samples and '
                'are left out', logger='current', level=logging.WARNING)
        self.means, self.precision = means, precision
        if self.relative:
            self.bg_mean, self.bg_precision = background_fit(
                feats, self.ridge, covariance=self.covariance,
                inverse=self.inverse)
        print_log(
            f'MahalanobisScorer ({self.name}): fitted {len(classes)} class '
            f'means on {feats.shape[0]} {data["meta"]["feature"]} features '
            f'(normalize={self.normalize}, covariance={self.covariance}, '
            f'{self.inverse}) of {self.train_features}', logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        self._check_ready('means')
        with torch.autocast(image_embeds.device.type, enabled=False):
            return mahalanobis_score(
                self._test_features(image_embeds), self.means,
                self.precision, self.relative, self.bg_mean,
                self.bg_precision, self.chunk_size)


@MODELS.register_module()
class KNNScorer(_FeatureScorer):
    """Cosine similarity to the k nearest training features.

    :meth:`prepare` keeps the cached training features (all samples of the
    file, labelled or not), after ``normalize`` and then L2-normalised, on
    the classifier's device in ``dtype``; :meth:`forward` returns
    :func:`~cma_ood.models.ood_scorers.functional.feature.knn_score` of the batch's
    features of the same kind, processed the same way. Defaults follow PLP
    (``eval/ood_scores.py: OOD_classifier_knn`` with ``--ood_knn_ks 1``):
    k = 1 on the cosine similarity of the file's (pre-projection) features.

    Args:
        train_features (str): feature file of the ID training set.
        k (int): number of neighbours.
        reduction (str): ``'kth'`` (k-th largest similarity) or ``'mean'``
            (mean of the k largest); the same for k = 1.
        normalize (str | None): applied before the cosine: ``None``,
            ``'zscore'`` (training mean and unbiased std) or ``'l2'``.
        feature (str, optional): the kind of features the file must hold.
        train_chunk_size (int): training rows per similarity block.
        dtype (str): ``'float32'`` or ``'float16'`` storage of the training
            features on the device (products are float32 either way).
        check_encoder (bool): see :class:`ProbeScorer`.
        name (str, optional): ``'kNN'`` by default.
    """

    def __init__(self,
                 train_features: str,
                 k: int = 1,
                 reduction: str = 'kth',
                 normalize: Optional[str] = None,
                 feature: Optional[str] = None,
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
        super().__init__(train_features, check_encoder, name or 'kNN',
                         normalize, feature)
        self.k = k
        self.reduction = reduction
        self.train_chunk_size = train_chunk_size
        self.dtype = dtype
        self.register_buffer('train_feats', None, persistent=False)

    def _needs_raw(self) -> bool:
        # the cosine ignores the length of the rows
        return self.normalize == 'zscore'

    def prepare(self, context: ScorerContext) -> None:
        data = self._load(context)
        feats = data['feats']
        if feats.shape[0] < self.k:
            raise ValueError(
                f'KNNScorer: k={self.k} exceeds the {feats.shape[0]} '
                f'features of {self.train_features}')
        device = context.device
        self._fit_stats(feats, device)
        train = torch.empty(feats.shape, dtype=getattr(torch, self.dtype),
                            device=device)
        step = 65536  # bounded extra memory for 1.28M training rows
        for start in range(0, feats.shape[0], step):
            rows = self._normalized(feats[start:start + step].to(device))
            train[start:start + step] = F.normalize(rows, dim=-1)
        self.train_feats = train
        print_log(
            f'KNNScorer ({self.name}): {feats.shape[0]} training '
            f'{data["meta"]["feature"]} features (normalize='
            f'{self.normalize}) from {self.train_features}, k={self.k} '
            f'({self.reduction})', logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        self._check_ready('train_feats')
        with torch.autocast(image_embeds.device.type, enabled=False):
            return knn_score(
                F.normalize(self._test_features(image_embeds), dim=-1),
                self.train_feats,
                self.k,
                self.reduction,
                chunk_size=max(1, image_embeds.shape[0]),
                train_chunk_size=self.train_chunk_size)
