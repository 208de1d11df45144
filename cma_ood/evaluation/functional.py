"""Pure OoD-detection metrics (functional core, no state).

Scores are always *higher = more in-distribution*. Papers differ in how
FPR95 and AUPR are computed from them; :func:`ood_metrics` implements three
published conventions, chosen by ``protocol`` (see its docstring):

- ``'mos'`` (default; NegLabel / MCM evaluation code): ID positive, FPR95 at
  the ID recall closest to 95% with pessimistic ties, AUPR = average
  precision.
- ``'cma'`` (CMA ``utils/metrics.py``, PLP): ID positive, FPR95 linearly
  interpolated on sklearn's ROC curve at TPR 0.95, AUPR by the trapezoid
  rule.
- ``'openood'`` (OpenOOD v1.5 ``openood/evaluators/metrics.py``): OoD
  positive on the negated score, FPR95 = FPR at the first ROC point whose
  TPR reaches 0.95, AUPR by the trapezoid rule.

All metrics are returned in percent.

:func:`bootstrap_ood_metrics` gives the same four metrics on bootstrap
resamples (vectorised, exact per resample) and :func:`percentile_interval`
their percentile interval (docs/diagnostics.md).
"""
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from sklearn.metrics import (auc, average_precision_score,
                             precision_recall_curve, roc_auc_score, roc_curve)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]

#: ID recall (true-positive rate) at which FPR95 is read.
RECALL_LEVEL = 0.95

#: Accepted values of ``protocol`` (:func:`ood_metrics`, ``OoDMetric``).
PROTOCOLS = ('mos', 'cma', 'openood')


def check_protocol(protocol, owner: str = 'ood_metrics') -> str:
    """Return ``protocol`` if it is one of :data:`PROTOCOLS`.

    Raises:
        ValueError: naming the bad value and the accepted ones.
    """
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(
            f'{owner}: unknown metric protocol {protocol!r}; expected one of '
            + ', '.join(repr(p) for p in PROTOCOLS))
    return protocol


def _as_scores(scores: ArrayLike, name: str) -> np.ndarray:
    """Convert ``scores`` to a finite, non-empty 1-D float64 numpy array.

    Raises:
        ValueError: naming ``name`` if the input is not 1-D, is empty or holds
            NaN/inf values.
    """
    if isinstance(scores, torch.Tensor):
        arr = scores.detach().to(device='cpu', dtype=torch.float64).numpy()
    else:
        try:
            arr = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'{name} must be numeric; could not convert it to float64 '
                f'({err})') from err
    if arr.ndim != 1:
        raise ValueError(
            f'{name} must be 1-D, got an array of shape {arr.shape}')
    if arr.size == 0:
        raise ValueError(f'{name} is empty')
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f'{name} holds {bad} non-finite value(s) (NaN or inf) out of '
            f'{arr.size}')
    return arr


def fpr_at_recall(id_scores: np.ndarray,
                  ood_scores: np.ndarray,
                  recall_level: float = RECALL_LEVEL) -> float:
    """Pessimistic FPR at an ID recall, as the NegLabel evaluation computes it.

    The threshold ``t`` sweeps the distinct values of the pooled scores and a
    sample is accepted as ID when ``score >= t``. Among the operating points,
    those whose ID recall ``TP / n_id`` (float64) is closest to
    ``recall_level`` are taken, and among those the one with the *lowest*
    threshold, so OoD samples lying between two ID scores at that recall are
    counted as accepted. Thresholds below the lowest ID score are not
    operating points (they keep recall 1 and only add false positives); this
    matches the published evaluation and only matters when recall 1 is the
    closest recall (fewer than ~10 ID samples or heavy ties).

    Closeness is compared in float64 as ``abs(TP / n_id - recall_level)``
    exactly as the published code does, so e.g. with 10 ID samples recall 0.9
    (distance 0.04999...93) beats recall 1.0 (0.05000...04).

    Vectorised: O((n_id + n_ood) log(n_id + n_ood)).

    Args:
        id_scores: (n_id,) float64, finite, non-empty; higher = more ID.
        ood_scores: (n_ood,) float64, finite, non-empty.
        recall_level: target ID recall in [0, 1].

    Returns:
        FPR as a fraction in [0, 1] (not percent).
    """
    n_id = id_scores.size
    # Distinct ID values, ascending; threshold u_k accepts every ID >= u_k.
    uniq, counts = np.unique(id_scores, return_counts=True)
    below = np.concatenate(([0], np.cumsum(counts)[:-1]))
    recall = (n_id - below) / n_id  # descending as the threshold ascends
    # argmin takes the first minimum: the lowest threshold among ties.
    k = int(np.argmin(np.abs(recall - recall_level)))
    ood_sorted = np.sort(ood_scores)
    if k == 0:
        # Lowest threshold with recall 1 that is an operating point: min ID.
        n_fp = ood_sorted.size - np.searchsorted(ood_sorted, uniq[0], 'left')
    else:
        # Lowest distinct score strictly above the next-lower ID value: every
        # OoD score > uniq[k - 1] is accepted.
        n_fp = ood_sorted.size - np.searchsorted(
            ood_sorted, uniq[k - 1], 'right')
    return float(n_fp) / ood_sorted.size


def fpr_at_tpr_interp(fpr: np.ndarray,
                      tpr: np.ndarray,
                      tpr_level: float = RECALL_LEVEL) -> float:
    """FPR at ``tpr_level`` on a ROC curve, as CMA's ``fpr_at_95_tpr``.

    Three branches, in the published order:

    - no point reaches ``tpr_level`` (every ``tpr < tpr_level``): 0;
    - every point reaches it: the lowest ``fpr`` among them;
    - otherwise ``np.interp(tpr_level, tpr, fpr)`` (linear interpolation;
      where several points share ``tpr == tpr_level`` numpy returns the
      ``fpr`` of the last of them, i.e. the highest).

    On a curve from sklearn's ``roc_curve`` (which starts at (0, 0) and ends
    at (1, 1)) only the interpolation branch can occur; the other two are
    kept for fidelity.

    Args:
        fpr: (n_points,) false-positive rates, non-decreasing.
        tpr: (n_points,) true-positive rates, non-decreasing.
        tpr_level: TPR at which the FPR is read.

    Returns:
        FPR as a fraction in [0, 1] (not percent).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    reached = tpr >= tpr_level
    if not reached.any():
        return 0.0
    if reached.all():
        return float(fpr[reached].min())
    return float(np.interp(tpr_level, tpr, fpr))


def _trapezoid_aupr(labels: np.ndarray, scores: np.ndarray) -> float:
    """``auc(recall, precision)`` of sklearn's ``precision_recall_curve``
    (label 1 positive, higher score = more positive), as a fraction."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(auc(recall, precision))


#: the metrics of :func:`ood_metrics`, in the order of the OoD tables
METRIC_KEYS = ('FPR95', 'AUROC', 'AUPR_IN', 'AUPR_OUT')


def mean_metrics(per_set) -> Dict[str, float]:
    """The mean of each metric (:data:`METRIC_KEYS`) over the metric dicts
    ``per_set`` (e.g. the OoD sets of a benchmark)."""
    per_set = list(per_set)
    return {k: float(np.mean([m[k] for m in per_set])) for k in METRIC_KEYS}


def summarise_sets(per_set: Mapping[str, Dict[str, float]],
                   groups: Optional[Mapping[str, Sequence[str]]] = None
                   ) -> Dict[str, Dict[str, float]]:
    """``per_set`` (``{set: metrics}``) followed by their ``mean`` and, per
    group of ``groups`` (``{group: member sets}``) with a member present,
    the mean over its members (an ordered dict)."""
    summary = OrderedDict(per_set)
    summary['mean'] = mean_metrics(per_set.values())
    for group, members in (groups or {}).items():
        got = [per_set[m] for m in members if m in per_set]
        if got:
            summary[group] = mean_metrics(got)
    return summary


def _mos_metrics(ind, ood, scores, is_id) -> Dict[str, float]:
    return {
        'AUROC': float(roc_auc_score(is_id, scores)),
        'FPR95': fpr_at_recall(ind, ood, RECALL_LEVEL),
        'AUPR_IN': float(average_precision_score(is_id, scores)),
        'AUPR_OUT': float(average_precision_score(1 - is_id, -scores)),
    }


def _cma_metrics(ind, ood, scores, is_id) -> Dict[str, float]:
    # CMA utils/metrics.py calc_metrics(examples, labels) with ID label 1.
    fpr, tpr, _ = roc_curve(is_id, scores)  # drop_intermediate=True
    return {
        'AUROC': float(auc(fpr, tpr)),
        'FPR95': fpr_at_tpr_interp(fpr, tpr, RECALL_LEVEL),
        'AUPR_IN': _trapezoid_aupr(is_id, scores),
        'AUPR_OUT': _trapezoid_aupr(1 - is_id, -scores),
    }


def _openood_metrics(ind, ood, scores, is_id) -> Dict[str, float]:
    # OpenOOD v1.5 auc_and_fpr_recall: OoD positive on the negated score.
    is_ood = 1 - is_id
    fpr, tpr, _ = roc_curve(is_ood, -scores)  # drop_intermediate=True
    return {
        'AUROC': float(auc(fpr, tpr)),
        # first point whose OoD TPR reaches 0.95 (the last point has TPR 1)
        'FPR95': float(fpr[np.argmax(tpr >= RECALL_LEVEL)]),
        'AUPR_IN': _trapezoid_aupr(is_id, scores),
        'AUPR_OUT': _trapezoid_aupr(is_ood, -scores),
    }


_PROTOCOL_FUNCS = dict(
    mos=_mos_metrics, cma=_cma_metrics, openood=_openood_metrics)


def ood_metrics(id_scores: ArrayLike,
                ood_scores: ArrayLike,
                protocol: str = 'mos') -> Dict[str, float]:
    """AUROC, FPR95, AUPR-In and AUPR-Out of an ID/OoD score split.

    Higher score = more in-distribution, whatever the protocol. "ID
    positive" below means labels ``1`` for ID and ``0`` for OoD on the
    score as given; "OoD positive" means labels ``1`` for OoD on the negated
    score. All sklearn curves are built with their default arguments
    (``roc_curve(..., drop_intermediate=True)``, ``precision_recall_curve``
    without dropping).

    Args:
        id_scores: (n_id,) scores of the ID test set. numpy array, list or
            torch tensor (any float dtype/device; converted to float64 CPU).
        ood_scores: (n_ood,) scores of one OoD set, same conventions.
        protocol: metric convention, one of :data:`PROTOCOLS`:

            ``'mos'`` (default; NegLabel ``mmcls/utils/ood_evaluate.py``,
            MCM ``fpr_and_fdr_at_recall``), ID positive:

            - ``AUROC``: ``roc_auc_score``.
            - ``FPR95``: fraction of OoD accepted at the ID recall closest
              to 95%, pessimistic tie handling (see :func:`fpr_at_recall`).
            - ``AUPR_IN``: ``average_precision_score``, ID positive.
            - ``AUPR_OUT``: ``average_precision_score``, OoD positive.

            ``'cma'`` (CMA ``utils/metrics.py``, also PLP), ID positive:

            - ``AUROC``: ``auc(fpr, tpr)`` of ``roc_curve``.
            - ``FPR95``: :func:`fpr_at_tpr_interp` on that curve, i.e.
              ``np.interp(0.95, tpr, fpr)`` (fraction of OoD accepted at 95%
              ID recall, linearly interpolated between ROC points).
            - ``AUPR_IN``: trapezoid ``auc(recall, precision)`` of
              ``precision_recall_curve``, ID positive.
            - ``AUPR_OUT``: the same, OoD positive.

            ``'openood'`` (OpenOOD v1.5 ``openood/evaluators/metrics.py``),
            OoD positive:

            - ``AUROC``: ``auc(fpr, tpr)`` of ``roc_curve``, OoD positive
              (equal to the ID-positive AUROC up to rounding).
            - ``FPR95``: FPR (fraction of ID flagged as OoD) at the first
              ROC point whose TPR (fraction of OoD flagged) is >= 0.95.
            - ``AUPR_IN``: trapezoid AUPR with ID positive on the score.
            - ``AUPR_OUT``: trapezoid AUPR with OoD positive.

    Returns:
        dict of Python floats in percent (0-100) with keys ``AUROC``,
        ``FPR95`` (lower is better), ``AUPR_IN`` and ``AUPR_OUT``.

    Raises:
        ValueError: if ``protocol`` is not one of :data:`PROTOCOLS` (naming
            it and the accepted values), or if either input is not 1-D, is
            empty or holds NaN/inf (naming ``id_scores`` or ``ood_scores``).
    """
    check_protocol(protocol)
    ind = _as_scores(id_scores, 'id_scores')
    ood = _as_scores(ood_scores, 'ood_scores')
    scores = np.concatenate([ind, ood])
    is_id = np.concatenate(
        [np.ones(ind.size, dtype=np.int64),
         np.zeros(ood.size, dtype=np.int64)])
    fractions = _PROTOCOL_FUNCS[protocol](ind, ood, scores, is_id)
    return {key: 100.0 * value for key, value in fractions.items()}


# ================================================================ bootstrap
#: Default number of bootstrap resamples (``OoDMetric(bootstrap=...)``).
BOOTSTRAP_RESAMPLES = 1000

#: Elements (resamples x samples) one chunk of the bootstrap works on: the
#: chunk's arrays stay small enough for the CPU caches (2^18 measured
#: fastest, docs/diagnostics.md).
_CHUNK_ELEMENTS = 1 << 18


def bootstrap_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of one resampled set: ``stream`` 0 is the ID set, 1 +
    ``j`` the ``j``-th OoD set (:func:`bootstrap_ood_metrics`)."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _draw(rng: np.random.Generator, size: int) -> np.ndarray:
    """Indices of one resample with replacement: (size,) int64 in
    ``[0, size)``. One call per resample, so the draws do not depend on how
    the resamples are chunked."""
    return rng.integers(0, size, size)


def bootstrap_indices(size: int, num_resamples: int, seed: int = 0,
                      stream: int = 0) -> np.ndarray:
    """The indices :func:`bootstrap_ood_metrics` draws for one set.

    Args:
        size: the set's number of samples.
        num_resamples: R.
        seed: the bootstrap seed.
        stream: 0 for the ID set, ``1 + j`` for the ``j``-th OoD set.

    Returns:
        (R, size) int64: row ``r`` holds the ranks drawn for resample ``r``;
        ``np.sort(scores)[idx[r]]`` is that resample of any score of the set
        (the metrics depend on the resampled values only, not on which
        image holds them).
    """
    rng = bootstrap_rng(seed, stream)
    out = np.empty((num_resamples, size), dtype=np.int64)
    for r in range(num_resamples):
        out[r] = _draw(rng, size)
    return out


def _draw_counts(rng: np.random.Generator, size: int,
                 num: int) -> np.ndarray:
    """(num, size) int32 multiplicities of ``num`` successive resamples."""
    out = np.empty((num, size), dtype=np.int32)
    for r in range(num):
        out[r] = np.bincount(_draw(rng, size), minlength=size)
    return out


class _Grouped:
    """One score array sorted ascending and grouped by distinct value.

    Attributes:
        size: number of samples.
        values: (G,) distinct values, ascending.
        starts: (G,) first sorted position of each value, or None when every
            value is distinct (G == size).
    """

    def __init__(self, scores: np.ndarray):
        self.size = scores.size
        ordered = np.sort(scores)
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        self.values = ordered[first]
        self.starts = None if first.all() else np.flatnonzero(first)

    def counts(self, multiplicities: np.ndarray):
        """Per-value counts and their running sums of resamples.

        Args:
            multiplicities: (c, size) int32 counts of each rank (position
                in the sorted scores) in each of c resamples.

        Returns:
            ``(counts, cum)``: (c, G) int32 resampled count of each distinct
            value, and (c, G + 1) int32 with ``cum[:, g]`` the count of
            resampled scores below ``values[g]`` (``cum[:, G]`` = size).
        """
        ordered = multiplicities
        rows = multiplicities.shape[0]
        if self.starts is None:
            cum = np.empty((rows, self.size + 1), np.int32)
            cum[:, 0] = 0
            _row_cumsum(ordered, cum[:, 1:])
            return ordered, cum
        running = np.empty_like(ordered)
        _row_cumsum(ordered, running)
        cum = np.empty((rows, self.values.size + 1), np.int32)
        cum[:, 0] = 0
        # the running count where each value's run of samples ends
        np.take(running, np.r_[self.starts[1:], self.size] - 1, axis=1,
                out=cum[:, 1:])
        return np.diff(cum, axis=1), cum


def _row_cumsum(src: np.ndarray, out: np.ndarray) -> None:
    """``np.cumsum(src, axis=1, out=out)`` for (c, L) int32 arrays whose
    rows are contiguous; long rows one by one in torch (a 1-D scan,
    single-threaded and about five times faster than numpy's)."""
    if src.shape[1] < 4096:
        np.cumsum(src, axis=1, out=out)
        return
    for r in range(src.shape[0]):
        torch.cumsum(torch.from_numpy(src[r]), 0, dtype=torch.int32,
                     out=torch.from_numpy(out[r]))


def _rows_searchsorted(rows: np.ndarray, values: np.ndarray,
                       right: bool) -> np.ndarray:
    """``np.searchsorted(rows[i], values[i], side)`` for every row: rows
    (c, L) non-decreasing, values (c,); returns (c,) int64. Short rows by
    one comparison pass, long ones by a binary search each."""
    values = np.asarray(values).reshape(-1)
    if rows.shape[1] <= 256:
        hit = rows <= values[:, None] if right else rows < values[:, None]
        return hit.sum(axis=1)
    side = 'right' if right else 'left'
    return np.array([np.searchsorted(row, v, side)
                     for row, v in zip(rows, values)], dtype=np.int64)


def _min_count(total: int, level: float, strict: bool) -> int:
    """Smallest integer T in [0, total] with ``T / total > level`` (strict)
    or ``>= level``, compared in float64 as the metrics compare rates."""
    t = max(0, int(np.floor(level * total)) - 2)
    while t < total and not (t / total > level if strict else
                             t / total >= level):
        t += 1
    return t


class _IdState:
    """What every OoD set's metrics need from one chunk of ID resamples of
    one score (counts over the score's distinct ID values)."""

    def __init__(self, grouped: _Grouped, multiplicities: np.ndarray,
                 protocol: str):
        n = grouped.size
        self.n = n
        self.counts, self.cum = grouped.counts(multiplicities)
        counts, cum = self.counts, self.cum
        rows = np.arange(counts.shape[0])
        self.rows = rows
        g_count = counts.shape[1]
        # resampled ID scores >= each value; 0 replaced by 1 in the
        # denominator copy (those values carry no resampled count, so their
        # terms are 0 whatever the denominator)
        tp_ge = np.subtract(n, cum[:, :g_count])
        self.a_tp_ge = np.multiply(counts, tp_ge, dtype=np.float64)
        self.tp_ge_safe = np.maximum(tp_ge, 1, out=tp_ge)
        if protocol != 'mos':
            # the highest value present in each resample
            self.g_top = _rows_searchsorted(
                cum, np.full(len(rows), n), False) - 1
            tp_gt = np.subtract(n, cum[:, 1:])
            self.a_tp_gt = np.multiply(counts, tp_gt, dtype=np.float64)
            self.tp_gt_safe = np.maximum(tp_gt, 1, out=tp_gt)
        if protocol == 'mos':
            # FPR95 of fpr_at_recall: the below-count S of a present value
            # whose recall (n - S) / n is closest to the level; S_lo is the
            # largest S with recall >= level, S_hi the next one above.
            s_max = n - _min_count(n, RECALL_LEVEL, strict=False)
            # (cum[:, G] = n > s_max, so pos < G; s_hi = n means none)
            pos = _rows_searchsorted(cum, np.full(len(rows), s_max),
                                     True) - 1
            s_lo = cum[rows, pos]
            s_hi = cum[rows, pos + 1]
            d_lo = np.abs((n - s_lo) / n - RECALL_LEVEL)
            d_hi = np.abs((n - s_hi) / n - RECALL_LEVEL)
            s_star = np.where((s_hi < n) & (d_hi < d_lo), s_hi, s_lo)
            first = _rows_searchsorted(cum, np.ones(len(rows)), False) - 1
            prev = _rows_searchsorted(cum, s_star, False) - 1
            #: the ID value whose OoD count decides FPR95, and whether OoD
            #: scores equal to it count (S* = 0: ``>= min``) or not
            self.fpr_value = np.where(s_star == 0, first, prev)
            self.fpr_inclusive = s_star == 0
        elif protocol == 'cma':
            # interpolation between the ROC points around TPR 0.95: the
            # present value g* where the ID count >= value first exceeds
            # the level, and the point just above it
            s_c = n - _min_count(n, RECALL_LEVEL, strict=True)
            self.g_star = _rows_searchsorted(
                cum, np.full(len(rows), s_c), True) - 1


class _Cross:
    """Positions of one score's distinct ID values among its distinct
    values of one OoD set and back."""

    def __init__(self, id_g: _Grouped, ood_g: _Grouped):
        ux, uy = id_g.values, ood_g.values
        self.ood_lt_id = np.searchsorted(uy, ux, 'left')   # (G,)
        self.ood_le_id = np.searchsorted(uy, ux, 'right')  # (G,)
        self.id_lt_ood = np.searchsorted(ux, uy, 'left')   # (H,)
        self.id_le_ood = np.searchsorted(ux, uy, 'right')  # (H,)
        self.ties = bool(np.any(self.ood_le_id != self.ood_lt_id))
        if self.ties:
            pooled = np.union1d(ux, uy)
            self.pool_size = pooled.size
            self.id_pool = np.searchsorted(pooled, ux)
            self.ood_pool = np.searchsorted(pooled, uy)


def _openood_fpr95_exact(id_counts: np.ndarray, ood_counts: np.ndarray,
                         cross: _Cross) -> float:
    """OpenOOD's FPR@95 of one resample from its counts per distinct value,
    following sklearn's ``roc_curve(drop_intermediate=True)`` point by
    point (used where an ID value ties the OoD value at the crossing)."""
    a = np.zeros(cross.pool_size, np.int64)
    b = np.zeros(cross.pool_size, np.int64)
    a[cross.id_pool] = id_counts
    b[cross.ood_pool] = ood_counts
    present = (a + b) > 0
    # OoD positive on the negated score: thresholds in ascending score
    fps, tps = np.cumsum(a[present]), np.cumsum(b[present])
    if fps.size > 2:
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0),
                     True]
        fps, tps = fps[keep], tps[keep]
    fpr = np.r_[0, fps] / fps[-1]
    tpr = np.r_[0, tps] / tps[-1]
    return float(fpr[np.argmax(tpr >= RECALL_LEVEL)])


def _pair_chunk(protocol: str, ids: _IdState, ood_g: _Grouped,
                ood_mult: np.ndarray, cross: _Cross) -> Dict[str, np.ndarray]:
    """The four metrics (fractions, (c,) each) of c resamples of one
    (score, OoD set) pair; see :func:`bootstrap_ood_metrics`."""
    n, m = ids.n, ood_g.size
    rows = ids.rows
    b, bcum = ood_g.counts(ood_mult)
    h_count = b.shape[1]
    # OoD scores >= each ID value (and > it, which differs only at ties)
    fp_neg = np.subtract(m, bcum)
    # ID scores < and <= each OoD value
    id_lt = np.take(ids.cum, cross.id_lt_ood, axis=1)
    id_le = np.take(ids.cum, cross.id_le_ood, axis=1) if cross.ties else id_lt
    out = {}
    # AUROC: Mann-Whitney with ties counted half (= roc_auc_score and the
    # trapezoid under roc_curve of every protocol)
    b_f = b.astype(np.float64)
    num = np.einsum('ij,ij->i', b_f, np.add(id_lt, id_le, dtype=np.float64))
    out['AUROC'] = 1.0 - num / (2.0 * n * m)
    # AUPR-In: precision at each ID value (ID >= u / all >= u), the
    # (c, G) pass that dominates the cost
    denom = np.take(fp_neg, cross.ood_lt_id, axis=1)
    if protocol != 'mos':
        fp_gt = np.take(fp_neg, cross.ood_le_id, axis=1) if cross.ties \
            else denom.copy()
    denom += ids.tp_ge_safe
    ap_in = np.divide(ids.a_tp_ge, denom).sum(axis=1)
    # AUPR-Out: OoD positive on the negated score, precision at each OoD
    # value (OoD <= y / all <= y)
    oo_le = bcum[:, 1:]
    ap_out = (b_f * oo_le / np.maximum(oo_le + id_le, 1)).sum(axis=1)
    if protocol == 'mos':
        out['AUPR_IN'] = ap_in / n
        out['AUPR_OUT'] = ap_out / m
        cols = np.where(ids.fpr_inclusive,
                        cross.ood_lt_id[ids.fpr_value],
                        cross.ood_le_id[ids.fpr_value])
        out['FPR95'] = fp_neg[rows, cols] / m
        return out
    # trapezoid AUPR: each recall step averages the precision at its value
    # and at the next higher present value (1 above the top one)
    prev_in = (ids.a_tp_gt / (ids.tp_gt_safe + fp_gt)).sum(axis=1)
    top = ids.g_top
    prev_in += ids.counts[rows, top] * (fp_gt[rows, top] == 0)
    out['AUPR_IN'] = (ap_in + prev_in) / (2.0 * n)
    oo_lt = bcum[:, :h_count]
    prev_out = (b_f * oo_lt / np.maximum(oo_lt + id_lt, 1)).sum(axis=1)
    bottom = _rows_searchsorted(bcum, np.ones(len(rows)), False) - 1
    prev_out += b[rows, bottom] * (id_lt[rows, bottom] == 0)
    out['AUPR_OUT'] = (ap_out + prev_out) / (2.0 * m)
    if protocol == 'cma':
        # np.interp(0.95, tpr, fpr) between the point of value g* and the
        # point just above it
        g = ids.g_star
        x1 = (n - ids.cum[rows, g]) / n
        x0 = (n - ids.cum[rows, g + 1]) / n
        y1 = fp_neg[rows, cross.ood_lt_id[g]] / m
        y0 = fp_gt[rows, g] / m
        slope = (y1 - y0) / (x1 - x0)
        out['FPR95'] = slope * (RECALL_LEVEL - x0) + y0
        return out
    # openood: the first OoD value whose OoD count <= it reaches 95%
    t_o = _min_count(m, RECALL_LEVEL, strict=False)
    h0 = _rows_searchsorted(bcum, np.full(len(rows), t_o), False) - 1
    fpr = id_le[rows, h0] / n
    if cross.ties:
        # sklearn may drop that point as collinear; it matters only where
        # ID scores equal that OoD value (else the FPR is flat there)
        tied = np.flatnonzero(id_le[rows, h0] != id_lt[rows, h0])
        for r in tied:
            fpr[r] = _openood_fpr95_exact(ids.counts[r], b[r], cross)
    out['FPR95'] = fpr
    return out


def bootstrap_ood_metrics(
        id_scores: Mapping[str, ArrayLike],
        ood_scores: Mapping[str, Mapping[str, ArrayLike]],
        protocol: str = 'mos',
        num_resamples: int = BOOTSTRAP_RESAMPLES,
        seed: int = 0,
        num_threads: Optional[int] = None
) -> Dict[str, Dict[str, Dict[str, np.ndarray]]]:
    """:func:`ood_metrics` of ``num_resamples`` bootstrap resamples.

    Each resample draws the ID set and every OoD set independently, each
    with replacement and at its own size, and one ID resample serves all
    OoD sets of a score (so the mean over the sets of each resample gives
    the interval of the mean). Resampling a set draws *ranks*: resample
    ``r`` of the ID scores is ``np.sort(id)[bootstrap_indices(n, R, seed,
    0)[r]]``, of the ``j``-th OoD set (in ``ood_scores`` order)
    ``np.sort(ood)[bootstrap_indices(m_j, R, seed, 1 + j)[r]]``. As every
    metric depends on the two multisets of scores only, this is the
    ordinary bootstrap of each score; the same rank draws serve every score
    (which saves a gather per score, but pairs no images across scores).
    The results depend neither on chunking nor on ``num_threads``.

    Vectorised: each score is sorted once; a chunk of c resamples is a
    (c, n) array of rank multiplicities, summed per distinct value, and
    every metric is read from running counts of those (AUROC as
    Mann-Whitney from the ID counts below each OoD value, AUPR from the
    precision at each distinct value, FPR95 from the per-resample operating
    point found by a batched ``searchsorted``). Each resample's figures
    equal ``ood_metrics`` of the resampled arrays (to float rounding,
    ~1e-13 in percent) for every protocol, ties included; OpenOOD's FPR@95
    follows sklearn's dropping of collinear ROC points exactly (a
    per-resample pass where an ID score ties the OoD score at the
    crossing). Cost: O(R (n + m)) per (score, set) pair; a MOS-size table
    (50,000 ID and 35,640 OoD images, 10 scores, 1,000 resamples, 'mos')
    takes about 11 s on one core (docs/diagnostics.md); the scores are
    spread over ``num_threads`` threads.

    Args:
        id_scores: ``{score: (n,) scores}`` of the same n ID images in one
            order (higher = ID).
        ood_scores: ``{set: {score: (m_set,) scores}}``; a set may lack
            some scores.
        protocol: one of :data:`PROTOCOLS`.
        num_resamples: R >= 1.
        seed: non-negative int; the draws are ``bootstrap_rng(seed,
            stream)``'s.
        num_threads: threads working on the scores in parallel (default:
            the CPU cores available); the result does not depend on it.

    Returns:
        ``{score: {set: {metric: (R,) float64 in percent}}}`` with the keys
        of :func:`ood_metrics`.

    Raises:
        ValueError: for an unknown protocol, R < 1, a negative seed, a
            score missing from ``id_scores``, arrays of unequal length
            within a set, or scores that are empty, not 1-D or not finite.
    """
    check_protocol(protocol, owner='bootstrap_ood_metrics')
    if int(num_resamples) != num_resamples or num_resamples < 1:
        raise ValueError('bootstrap_ood_metrics: num_resamples must be a '
                         f'positive integer, got {num_resamples!r}')
    if int(seed) != seed or seed < 0:
        raise ValueError('bootstrap_ood_metrics: seed must be a non-negative '
                         f'integer, got {seed!r}')
    num_resamples, seed = int(num_resamples), int(seed)
    id_groups = {}
    for name, arr in id_scores.items():
        id_groups[name] = _Grouped(_as_scores(arr, f'id_scores[{name!r}]'))
    sizes = {g.size for g in id_groups.values()}
    if len(sizes) > 1:
        raise ValueError('bootstrap_ood_metrics: the ID scores must all '
                         f'score the same images; got lengths {sorted(sizes)}')
    ood_groups, ood_sizes = {}, {}
    for set_name, by_score in ood_scores.items():
        ood_groups[set_name] = {}
        for name, arr in by_score.items():
            if name not in id_groups:
                raise ValueError(
                    f'bootstrap_ood_metrics: score {name!r} of OoD set '
                    f'{set_name!r} has no ID scores')
            ood_groups[set_name][name] = _Grouped(
                _as_scores(arr, f'ood_scores[{set_name!r}][{name!r}]'))
        set_sizes = {g.size for g in ood_groups[set_name].values()}
        if len(set_sizes) > 1:
            raise ValueError(
                f'bootstrap_ood_metrics: the scores of OoD set {set_name!r} '
                f'have different lengths {sorted(set_sizes)}')
        ood_sizes[set_name] = set_sizes.pop() if set_sizes else 0
    out = {name: {s: {k: np.empty(num_resamples) for k in _METRIC_NAMES}
                  for s, by in ood_groups.items() if name in by}
           for name in id_groups}
    if not id_groups:
        return out
    n = sizes.pop()
    crosses = {(name, s): _Cross(id_groups[name], g)
               for s, by in ood_groups.items() for name, g in by.items()}
    id_rng = bootstrap_rng(seed, 0)
    ood_rngs = {s: bootstrap_rng(seed, 1 + j)
                for j, s in enumerate(ood_groups)}
    width = max([n] + list(ood_sizes.values()))
    chunk = max(1, min(num_resamples, _CHUNK_ELEMENTS // width))

    def score_chunk(name, start, id_mult, ood_mult):
        ids = _IdState(id_groups[name], id_mult, protocol)
        for s, by_score in ood_groups.items():
            if name in by_score:
                vals = _pair_chunk(protocol, ids, by_score[name], ood_mult[s],
                                   crosses[(name, s)])
                for key, v in vals.items():
                    out[name][s][key][start:start + len(v)] = 100.0 * v

    if num_threads is None:
        num_threads = _available_cpus()
    workers = max(1, min(int(num_threads), len(id_groups)))
    # numpy and torch release the GIL in the array loops; every task
    # writes its own slices and each generator serves one set, so the
    # result does not depend on the thread count
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, num_resamples, chunk):
            c = min(chunk, num_resamples - start)
            sets = [s for s in ood_groups if ood_sizes[s]]
            draws = list(pool.map(
                lambda rs: _draw_counts(rs[0], rs[1], c),
                [(id_rng, n)] + [(ood_rngs[s], ood_sizes[s]) for s in sets]))
            id_mult, ood_mult = draws[0], dict(zip(sets, draws[1:]))
            list(pool.map(
                lambda name: score_chunk(name, start, id_mult, ood_mult),
                id_groups))
    return out


def _available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_METRIC_NAMES = ('AUROC', 'FPR95', 'AUPR_IN', 'AUPR_OUT')


def percentile_interval(samples: ArrayLike,
                        level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval: the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of ``samples`` ((R,) finite floats;
    numpy's default linear interpolation).

    Raises:
        ValueError: if ``level`` is not in (0, 1) or ``samples`` is empty.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f'percentile_interval: level must be in (0, 1), got '
                         f'{level!r}')
    arr = np.asarray(samples, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError('percentile_interval: no samples')
    lo, hi = np.quantile(arr, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)
