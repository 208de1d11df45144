"""Feature-space OoD scores (pure torch).

Functional core of the probing baselines (no module state, no I/O), with
the published PLP code (HHU-MMBS/plp-official-tmlr2024) as the reference:

* :func:`feature_stats` / :func:`normalize_features`: the per-dimension
  z-scoring with the training set's mean and unbiased std that PLP applies
  before the probe (``embed_norm=True``; ``gen_embeds.py: save_embeds``,
  ``model_builders.py: load_embeds``), or row-wise L2 normalisation.
* :func:`mahalanobis_fit` / :func:`mahalanobis_score`: class means and a
  shared covariance -- by default the mean of the per-class unbiased
  covariances, inverted (``eval/ood_scores.py: compute_maha_vals``) -- and
  the relative Mahalanobis distance (Ren et al., 2021).
* :func:`knn_score`: cosine similarity to the k nearest training features
  (k = 1 by default, ``eval_args.py: --ood_knn_ks``), chunked over test
  *and* training rows so memory stays bounded for 1.28M training x 100k
  test features.

Conventions: features are rows, ``(N, D)``; labels are int64 class
indices; every score is ``(B,)`` with **higher = more in-distribution**.
Results are float32 unless stated otherwise.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...utils.checks import check_choice, check_matrix, check_positive_int

#: feature normalisations: z-score (train mean / unbiased std), row-wise
#: L2, or none
NORMALIZATIONS = ('zscore', 'l2', None)
#: shared-covariance estimates of :func:`mahalanobis_fit`
COVARIANCES = ('class_mean', 'pooled')
#: how :func:`mahalanobis_fit` inverts the covariance
INVERSES = ('inv', 'pinv')


# -------------------------------------------------------- normalisation
def check_normalize(normalize, who: str = 'normalize'):
    """Validate a normalisation name (:data:`NORMALIZATIONS`)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{who}: normalize must be 'zscore', 'l2' or None, "
                         f'got {normalize!r}')
    return normalize


def feature_stats(feats: Tensor,
                  chunk_size: int = 65536) -> Tuple[Tensor, Tensor]:
    """Per-dimension mean and **unbiased** std of training features.

    As PLP's ``embeddings.mean(dim=0)`` / ``embeddings.std(dim=0)`` (torch's
    default correction of 1, no epsilon), accumulated in float64 ``chunk_size``
    rows at a time (two passes), returned as float32 ``(D,)`` each.

    Raises:
        ValueError: fewer than 2 rows, or a dimension that is constant
            (its std is 0: z-scoring would divide by zero, where PLP would
            silently produce inf/NaN).
    """
    check_matrix(feats, 'feats')
    check_positive_int(chunk_size, 'chunk_size')
    n = feats.shape[0]
    if n < 2:
        raise ValueError(f'feature_stats needs at least 2 rows, got {n}')
    total = torch.zeros(feats.shape[1], dtype=torch.float64,
                        device=feats.device)
    for start in range(0, n, chunk_size):
        total += feats[start:start + chunk_size].double().sum(0)
    mean = total / n
    sq = torch.zeros_like(total)
    for start in range(0, n, chunk_size):
        sq += (feats[start:start + chunk_size].double() - mean).square().sum(0)
    std = (sq / (n - 1)).sqrt()
    constant = int((std == 0).sum())
    if constant:
        raise ValueError(
            f'feature_stats: {constant} of {feats.shape[1]} feature '
            'dimensions are constant over the training set (std 0); '
            "z-scoring is undefined, use normalize='l2' or None")
    return mean.float(), std.float()


def normalize_features(x: Tensor,
                       normalize: Optional[str],
                       mean: Optional[Tensor] = None,
                       std: Optional[Tensor] = None) -> Tensor:
    """``x`` as float32 after ``normalize``:

    * ``'zscore'``: ``(x - mean) / std`` (the *training* statistics from
      :func:`feature_stats`, also for test and OoD features, as PLP);
    * ``'l2'``: rows scaled to unit L2 norm;
    * ``None``: unchanged.
    """
    check_normalize(normalize)
    x = x.float()
    if normalize == 'l2':
        return F.normalize(x, dim=-1)
    if normalize == 'zscore':
        if mean is None or std is None:
            raise ValueError("normalize='zscore' needs the training mean "
                             'and std (feature_stats)')
        if mean.shape != (x.shape[-1], ) or std.shape != mean.shape:
            raise ValueError(
                f'z-score statistics have shape {tuple(mean.shape)} / '
                f'{tuple(std.shape)}, features have {x.shape[-1]} '
                'dimensions')
        return (x - mean.to(x.device, torch.float32)) / std.to(
            x.device, torch.float32)
    return x


# ---------------------------------------------------------- Mahalanobis
def _precision(cov: Tensor, ridge: float, inverse: str) -> Tensor:
    """``inv`` or ``pinv`` of ``cov + ridge * I`` (float64)."""
    if ridge < 0:
        raise ValueError(f'ridge must be >= 0, got {ridge}')
    check_choice(inverse, INVERSES, 'inverse')
    if ridge:
        cov = cov + ridge * torch.eye(
            cov.shape[0], dtype=cov.dtype, device=cov.device)
    if inverse == 'pinv':
        prec = torch.linalg.pinv(cov, hermitian=True)
        return (prec + prec.T) / 2
    # rank-deficient covariances are rarely exactly singular in floating
    # point: test the eigenvalues with the usual rank tolerance (PLP's
    # .inverse() would return huge, meaningless values instead)
    eig = torch.linalg.eigvalsh(cov)
    tol = eig.abs().max() * cov.shape[0] * torch.finfo(cov.dtype).eps
    prec, info = torch.linalg.inv_ex(cov)
    if int(info) != 0 or bool(eig.min() <= tol) \
            or not torch.isfinite(prec).all():
        raise ValueError(
            f'mahalanobis_fit: the {cov.shape[0]} x {cov.shape[0]} '
            'covariance is singular (e.g. fewer samples than dimensions, or '
            "features confined to a subspace); use inverse='pinv' or a "
            'ridge > 0')
    return prec


def mahalanobis_fit(feats: Tensor,
                    labels: Tensor,
                    num_classes: Optional[int] = None,
                    ridge: float = 0.0,
                    skip_empty: bool = False,
                    chunk_size: int = 65536,
                    covariance: str = 'class_mean',
                    inverse: str = 'inv'
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """Class means and the shared-covariance precision of training features.

    ``mu_c = mean_{i: y_i = c} x_i``; the shared covariance ``S`` is

    * ``covariance='class_mean'`` (PLP's ``compute_maha_vals``): the mean
      over the classes of the per-class **unbiased** covariances,
      ``S = 1/C' sum_c 1/(n_c - 1) sum_{i: y_i = c} (x_i - mu_c)(x_i -
      mu_c)^T``; classes need at least 2 samples (PLP leaves classes with
      fewer out of the means and the covariance);
    * ``covariance='pooled'``: the tied maximum-likelihood covariance of
      the class-centred features, ``1/N sum_i (x_i - mu_{y_i})(...)^T``
      (Lee et al. 2018); classes need at least 1 sample.

    The precision is ``inv(S + ridge * I)`` (``inverse='inv'``, PLP's
    ``.inverse()``; a singular ``S``, i.e. an eigenvalue below the usual
    rank tolerance ``D * eps * max |eig|``, is an error) or the Moore-Penrose
    ``pinv`` (``'pinv'``, hermitian; stays finite for singular ``S``).
    Everything is accumulated in float64, ``chunk_size`` rows at a time (two
    passes over ``feats``), so ``feats`` may be float16 and larger than
    memory in float64.

    Args:
        feats: ``(N, D)`` training features.
        labels: ``(N,)`` int class indices in ``[0, num_classes)``.
        num_classes: ``C``; defaults to ``labels.max() + 1``.
        ridge: added to the covariance diagonal before inverting, >= 0.
        skip_empty: classes with too few samples (see above) are left out
            (their index is absent from ``classes``) instead of raising.
        chunk_size: rows per accumulation step.
        covariance: ``'class_mean'`` or ``'pooled'``.
        inverse: ``'inv'`` or ``'pinv'``.

    Returns:
        ``(means, precision, classes)``: float64 ``(C', D)`` means of the
        ``C'`` kept classes, float64 ``(D, D)`` precision, int64 ``(C',)``
        their class indices (ascending), all on ``feats``' device.
    """
    check_matrix(feats, 'feats')
    check_positive_int(chunk_size, 'chunk_size')
    check_choice(covariance, COVARIANCES, 'covariance')
    check_choice(inverse, INVERSES, 'inverse')
    if labels.dim() != 1 or labels.shape[0] != feats.shape[0]:
        raise ValueError(f'labels must have shape ({feats.shape[0]},), got '
                         f'{tuple(labels.shape)}')
    if feats.shape[0] == 0:
        raise ValueError('mahalanobis_fit: feats is empty')
    labels = labels.to(feats.device, torch.long)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f'labels must lie in [0, {num_classes}), got '
            f'{int(labels.min())}..{int(labels.max())}')
    n, dim = feats.shape
    dev = feats.device
    min_count = 2 if covariance == 'class_mean' else 1
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts >= min_count
    if not present.all() and not skip_empty:
        few = torch.nonzero(~present).flatten().tolist()
        raise ValueError(
            f'mahalanobis_fit: {len(few)} of {num_classes} classes have '
            f'fewer than {min_count} training sample(s) (first: '
            f'{few[:10]}); pass skip_empty=True to leave them out')
    if not present.any():
        raise ValueError(f'mahalanobis_fit: no class has {min_count} or more '
                         'training samples')
    keep = present[labels]
    sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=dev)
    for start in range(0, n, chunk_size):
        sums.index_add_(0, labels[start:start + chunk_size],
                        feats[start:start + chunk_size].double())
    means_all = sums / counts.clamp(min=1).unsqueeze(1).double()
    classes = torch.nonzero(present).flatten()
    # per-row weights of the scatter sum: 1 / (C' (n_c - 1)) averages the
    # per-class unbiased covariances; 1 / N pools them
    if covariance == 'class_mean':
        weight_of_class = 1.0 / (len(classes) *
                                 (counts.double() - 1).clamp(min=1))
    else:
        weight_of_class = torch.full((num_classes, ), 1.0 / int(keep.sum()),
                                     dtype=torch.float64, device=dev)
    weight_of_class = torch.where(present, weight_of_class,
                                  torch.zeros_like(weight_of_class))
    cov = torch.zeros(dim, dim, dtype=torch.float64, device=dev)
    for start in range(0, n, chunk_size):
        lab = labels[start:start + chunk_size]
        centred = feats[start:start + chunk_size].double() - means_all[lab]
        cov += centred.T @ (centred * weight_of_class[lab].unsqueeze(1))
    return means_all[classes], _precision(cov, ridge, inverse), classes


def background_fit(feats: Tensor,
                   ridge: float = 0.0,
                   chunk_size: int = 65536,
                   covariance: str = 'class_mean',
                   inverse: str = 'inv') -> Tuple[Tensor, Tensor]:
    """Class-agnostic ("background") Gaussian of relative Mahalanobis.

    ``mu_0 = mean_i x_i`` and the covariance of all training features:
    unbiased (``1/(N-1)``, PLP's ``train_embeds_in.T.cov()``) for
    ``covariance='class_mean'``, ``1/N`` for ``'pooled'``; returns float64
    ``(mu_0 (D,), inverse(S_0 + ridge * I) (D, D))``.
    """
    check_matrix(feats, 'feats')
    labels = torch.zeros(feats.shape[0], dtype=torch.long,
                         device=feats.device)
    means, prec, _ = mahalanobis_fit(feats, labels, 1, ridge,
                                     chunk_size=chunk_size,
                                     covariance=covariance, inverse=inverse)
    return means[0], prec


def mahalanobis_distances(x: Tensor, means: Tensor,
                          precision: Tensor) -> Tensor:
    """Squared Mahalanobis distances ``(x_b - mu_c)^T P (x_b - mu_c)``.

    Args:
        x: ``(B, D)``; means: ``(C, D)``; precision: ``(D, D)`` symmetric.

    Returns:
        ``(B, C)`` in the dtype of ``precision`` (float64 from
        :func:`mahalanobis_fit`), computed as ``x'Px - 2 x'P mu + mu'P mu``
        and clamped at 0.
    """
    dtype = precision.dtype
    x = x.to(dtype)
    means = means.to(x.device, dtype)
    xp = x @ precision
    mp = means @ precision
    d = (xp * x).sum(1, keepdim=True) - 2 * xp @ means.T + \
        (mp * means).sum(1).unsqueeze(0)
    return d.clamp_min(0)


def mahalanobis_score(x: Tensor,
                      means: Tensor,
                      precision: Tensor,
                      relative: bool = False,
                      bg_mean: Optional[Tensor] = None,
                      bg_precision: Optional[Tensor] = None,
                      chunk_size: int = 4096) -> Tensor:
    """Negative minimum (relative) Mahalanobis distance; higher = ID.

    ``MD_c(x) = (x - mu_c)^T P (x - mu_c)`` and ``score = -min_c MD_c(x)``.
    With ``relative=True`` (Ren et al. 2021) the class-agnostic distance
    ``MD_0(x) = (x - mu_0)^T P_0 (x - mu_0)`` is subtracted from every class
    distance: ``RMD_c = MD_c - MD_0``, ``score = -min_c RMD_c`` (PLP's
    ``MahaDist.compute_scores``).

    Args:
        x: ``(B, D)`` test features (same preprocessing as the fit).
        means: ``(C, D)`` class means; precision: ``(D, D)`` shared
            precision (from :func:`mahalanobis_fit`).
        relative: use the relative distance; needs ``bg_mean`` ``(D,)`` and
            ``bg_precision`` ``(D, D)`` (from :func:`background_fit`).
        chunk_size: test rows per step (memory ``O(chunk_size * C)``).

    Returns:
        float32 ``(B,)`` on ``x``'s device (computed in ``precision``'s
        dtype).
    """
    check_matrix(x, 'x')
    check_matrix(means, 'means', dim=x.shape[1])
    check_positive_int(chunk_size, 'chunk_size')
    if precision.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f'precision must be ({x.shape[1]}, {x.shape[1]}), '
                         f'got {tuple(precision.shape)}')
    if relative and (bg_mean is None or bg_precision is None):
        raise ValueError('relative Mahalanobis needs bg_mean and '
                         'bg_precision (see background_fit)')
    precision = precision.to(x.device)
    if relative:
        bg_mean = bg_mean.reshape(1, -1).to(x.device)
        bg_precision = bg_precision.to(x.device)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start:start + chunk_size]
        dist = mahalanobis_distances(chunk, means, precision).amin(dim=1)
        if relative:
            dist = dist - mahalanobis_distances(chunk, bg_mean,
                                                bg_precision)[:, 0].to(
                                                    dist.dtype)
        out[start:start + chunk.shape[0]] = -dist
    return out


# ------------------------------------------------------------------ kNN
def knn_score(x: Tensor,
              train: Tensor,
              k: int = 1,
              reduction: str = 'kth',
              chunk_size: int = 1024,
              train_chunk_size: int = 65536) -> Tensor:
    """Cosine similarity to the k nearest training features; higher = ID.

    With L2-normalised rows the similarities are ``x @ train.T``; the score
    is the k-th largest similarity (``reduction='kth'``, Sun et al. 2022:
    ranking by it equals ranking by the negative k-th nearest-neighbour
    Euclidean distance) or the mean of the k largest (``'mean'``). With
    ``k = 1`` (the default, PLP's ``--ood_knn_ks``) both are the maximum
    cosine similarity; PLP's ``exp(cos / 0.02)`` ('temp-cos-sim') is a
    monotone function of it, so AUROC and FPR95 are the same.

    Memory is ``O(chunk_size * (train_chunk_size + k))``: for every chunk of
    test rows the training rows are visited ``train_chunk_size`` at a time
    while a running top-k is kept, so neither side is ever materialised in
    full as a similarity matrix. Products are float32 (inputs are upcast).

    Args:
        x: ``(B, D)`` L2-normalised test features.
        train: ``(N, D)`` L2-normalised training features, ``N >= k``;
            moved chunk by chunk to ``x``'s device, so it may stay on the
            CPU while ``x`` is on a GPU.
        k: number of neighbours, >= 1.
        reduction: ``'kth'`` or ``'mean'``.
        chunk_size: test rows per step.
        train_chunk_size: training rows per step.

    Returns:
        float32 ``(B,)`` on ``x``'s device.
    """
    check_matrix(x, 'x')
    check_matrix(train, 'train', dim=x.shape[1])
    check_positive_int(k, 'k')
    check_positive_int(chunk_size, 'chunk_size')
    check_positive_int(train_chunk_size, 'train_chunk_size')
    if reduction not in ('kth', 'mean'):
        raise ValueError(
            f"reduction must be 'kth' or 'mean', got {reduction!r}")
    if train.shape[0] < k:
        raise ValueError(f'k={k} exceeds the {train.shape[0]} training '
                         'features')
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        q = x[start:start + chunk_size].float()
        top = torch.full((q.shape[0], k), float('-inf'), device=x.device)
        for t_start in range(0, train.shape[0], train_chunk_size):
            # a no-op for float32 training rows already on x's device
            ref = train[t_start:t_start + train_chunk_size].to(
                x.device, torch.float32)
            sims = q @ ref.T
            top = torch.cat([top, sims], dim=1).topk(k, dim=1).values
        out[start:start + q.shape[0]] = top[:, -1] if reduction == 'kth' \
            else top.mean(dim=1)
    return out
