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
"""
from typing import Dict, Sequence, Union

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
