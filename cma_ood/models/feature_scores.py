"""Feature-space OoD scores and PLP's zero-shot pseudo-labels (pure torch).

Functional core of the probing baselines (no module state, no I/O):

* :data:`PLP_TEMPLATES`, :func:`zero_shot_ensemble_weights` and
  :func:`pseudo_labels`: the targets of pseudo-label probing (PLP, TMLR
  2024), i.e. the argmax of CLIP's zero-shot classifier built from a prompt
  ensemble.
* :func:`mahalanobis_fit` / :func:`mahalanobis_score`: class means and a
  shared (tied) covariance of training embeddings (Lee et al., 2018), and
  the relative Mahalanobis distance option (Ren et al., 2021).
* :func:`knn_score`: cosine similarity to the k nearest training embeddings
  (Sun et al., 2022), chunked over test *and* training rows so memory stays
  bounded for 1.28M training x 100k test embeddings.

Conventions: embeddings are rows, ``(N, D)``; labels are int64 class
indices; every score is ``(B,)`` with **higher = more in-distribution**.
Results are float32 unless stated otherwise.
"""
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .tensor_checks import check_matrix

#: PLP's prompt ensemble (exact strings, trailing period included)
PLP_TEMPLATES = (
    'a photo of a {}.',
    'a blurry photo of a {}.',
    'a photo of many {}.',
    'a photo of the large {}.',
    'a photo of the small {}.',
)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


# ------------------------------------------------------------------ PLP
def zero_shot_ensemble_weights(encode_fn: Callable[[Sequence[str]], Tensor],
                               classnames: Sequence[str],
                               templates: Sequence[str] = PLP_TEMPLATES
                               ) -> Tensor:
    """CLIP's zero-shot classifier from a prompt ensemble.

    For every template ``t``, the prompts ``t.format(c)`` of all classes are
    encoded and L2-normalised; the per-class mean over the templates is
    L2-normalised again (CLIP's prompt-ensembling recipe).

    Args:
        encode_fn: maps a list of ``C`` prompts to their text embeddings
            ``(C, D)`` (normalised or not: each is normalised here).
        classnames: the ``C`` ID class names.
        templates: prompt templates with one ``{}`` each; defaults to
            :data:`PLP_TEMPLATES`.

    Returns:
        float32 ``(C, D)`` unit-norm class weights, on ``encode_fn``'s
        device.
    """
    classnames = list(classnames)
    templates = list(templates)
    if not classnames:
        raise ValueError('zero_shot_ensemble_weights: classnames is empty')
    if not templates:
        raise ValueError('zero_shot_ensemble_weights: templates is empty')
    total = None
    for template in templates:
        if template.count('{}') != 1:
            raise ValueError(f'template {template!r} must contain exactly '
                             'one "{}" placeholder')
        embeds = encode_fn([template.format(c) for c in classnames])
        check_matrix(embeds, f'embeddings of template {template!r}')
        if embeds.shape[0] != len(classnames):
            raise ValueError(
                f'encode_fn returned {embeds.shape[0]} embeddings for '
                f'{len(classnames)} prompts of template {template!r}')
        embeds = F.normalize(embeds.float(), dim=-1)
        total = embeds if total is None else total + embeds
    return F.normalize(total / len(templates), dim=-1)


def pseudo_labels(feats: Tensor,
                  class_weights: Tensor,
                  chunk_size: int = 65536) -> Tensor:
    """PLP targets: ``argmax_c feats @ class_weights.T`` (zero-shot labels).

    Args:
        feats: ``(N, D)`` L2-normalised image embeddings (any float dtype;
            computed in float32).
        class_weights: ``(C, D)`` zero-shot classifier, e.g. from
            :func:`zero_shot_ensemble_weights`.
        chunk_size: rows of ``feats`` per matrix product.

    Returns:
        int64 ``(N,)`` class indices, on ``feats``' device.
    """
    check_matrix(feats, 'feats')
    check_matrix(class_weights, 'class_weights', feats.shape[1])
    _check_positive_int(chunk_size, 'chunk_size')
    weights = class_weights.to(feats.device, torch.float32)
    out = torch.empty(feats.shape[0], dtype=torch.long, device=feats.device)
    for start in range(0, feats.shape[0], chunk_size):
        chunk = feats[start:start + chunk_size].float()
        out[start:start + chunk.shape[0]] = (chunk @ weights.T).argmax(dim=1)
    return out


# ---------------------------------------------------------- Mahalanobis
def _precision(cov: Tensor, ridge: float) -> Tensor:
    """Pseudo-inverse of ``cov + ridge * I`` (symmetric, float64)."""
    if ridge < 0:
        raise ValueError(f'ridge must be >= 0, got {ridge}')
    if ridge:
        cov = cov + ridge * torch.eye(
            cov.shape[0], dtype=cov.dtype, device=cov.device)
    prec = torch.linalg.pinv(cov, hermitian=True)
    return (prec + prec.T) / 2


def mahalanobis_fit(feats: Tensor,
                    labels: Tensor,
                    num_classes: Optional[int] = None,
                    ridge: float = 0.0,
                    skip_empty: bool = False,
                    chunk_size: int = 65536
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """Class means and the shared-covariance precision of training features.

    ``mu_c = mean_{i: y_i = c} x_i`` and the tied covariance of the
    class-centred features ``S = 1/N sum_i (x_i - mu_{y_i})(x_i -
    mu_{y_i})^T`` (maximum-likelihood, divided by N as in Lee et al. 2018).
    The precision is ``pinv(S + ridge * I)`` (Moore-Penrose, hermitian):
    the pseudo-inverse keeps the distance finite when ``S`` is singular
    (e.g. D > N, or features confined to a subspace); a small ``ridge``
    regularises near-singular directions instead. Everything is accumulated
    in float64, ``chunk_size`` rows at a time (two passes over ``feats``),
    so ``feats`` may be float16 and larger than memory in float64.

    Args:
        feats: ``(N, D)`` training embeddings.
        labels: ``(N,)`` int class indices in ``[0, num_classes)``.
        num_classes: ``C``; defaults to ``labels.max() + 1``.
        ridge: added to the covariance diagonal before inverting, >= 0.
        skip_empty: classes without samples are left out of ``means``
            (their index is absent from ``classes``) instead of raising.
        chunk_size: rows per accumulation step.

    Returns:
        ``(means, precision, classes)``: float64 ``(C', D)`` means of the
        ``C'`` non-empty classes, float64 ``(D, D)`` precision, int64
        ``(C',)`` their class indices (ascending), all on ``feats``' device.
    """
    check_matrix(feats, 'feats')
    _check_positive_int(chunk_size, 'chunk_size')
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
    sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=dev)
    counts = torch.bincount(labels, minlength=num_classes)
    for start in range(0, n, chunk_size):
        sums.index_add_(0, labels[start:start + chunk_size],
                        feats[start:start + chunk_size].double())
    present = counts > 0
    if not present.all() and not skip_empty:
        empty = torch.nonzero(~present).flatten().tolist()
        raise ValueError(
            f'mahalanobis_fit: {len(empty)} of {num_classes} classes have no '
            f'training samples (first: {empty[:10]}); pass skip_empty=True '
            'to leave them out')
    means_all = sums / counts.clamp(min=1).unsqueeze(1).double()
    cov = torch.zeros(dim, dim, dtype=torch.float64, device=dev)
    for start in range(0, n, chunk_size):
        centred = feats[start:start + chunk_size].double() - \
            means_all[labels[start:start + chunk_size]]
        cov += centred.T @ centred
    classes = torch.nonzero(present).flatten()
    return means_all[classes], _precision(cov / n, ridge), classes


def background_fit(feats: Tensor,
                   ridge: float = 0.0,
                   chunk_size: int = 65536) -> Tuple[Tensor, Tensor]:
    """Class-agnostic ("background") Gaussian of relative Mahalanobis.

    ``mu_0 = mean_i x_i`` and ``S_0 = 1/N sum_i (x_i - mu_0)(x_i - mu_0)^T``;
    returns float64 ``(mu_0 (D,), pinv(S_0 + ridge * I) (D, D))``.
    """
    check_matrix(feats, 'feats')
    labels = torch.zeros(feats.shape[0], dtype=torch.long,
                         device=feats.device)
    means, prec, _ = mahalanobis_fit(feats, labels, 1, ridge,
                                     chunk_size=chunk_size)
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
    distance: ``RMD_c = MD_c - MD_0``, ``score = -min_c RMD_c``.

    Args:
        x: ``(B, D)`` test embeddings (same preprocessing as the fit, e.g.
            L2-normalised).
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
    check_matrix(means, 'means', x.shape[1])
    _check_positive_int(chunk_size, 'chunk_size')
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
              k: int = 50,
              reduction: str = 'kth',
              chunk_size: int = 1024,
              train_chunk_size: int = 65536) -> Tensor:
    """Cosine similarity to the k nearest training embeddings; higher = ID.

    With L2-normalised rows the similarities are ``x @ train.T``; the score
    is the k-th largest similarity (``reduction='kth'``, Sun et al. 2022:
    ranking by it equals ranking by the negative k-th nearest-neighbour
    Euclidean distance) or the mean of the k largest (``'mean'``).

    Memory is ``O(chunk_size * (train_chunk_size + k))``: for every chunk of
    test rows the training rows are visited ``train_chunk_size`` at a time
    while a running top-k is kept, so neither side is ever materialised in
    full as a similarity matrix. Products are float32 (inputs are upcast).

    Args:
        x: ``(B, D)`` L2-normalised test embeddings.
        train: ``(N, D)`` L2-normalised training embeddings, ``N >= k``;
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
    check_matrix(train, 'train', x.shape[1])
    _check_positive_int(k, 'k')
    _check_positive_int(chunk_size, 'chunk_size')
    _check_positive_int(train_chunk_size, 'train_chunk_size')
    if reduction not in ('kth', 'mean'):
        raise ValueError(
            f"reduction must be 'kth' or 'mean', got {reduction!r}")
    if train.shape[0] < k:
        raise ValueError(f'k={k} exceeds the {train.shape[0]} training '
                         'embeddings')
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
