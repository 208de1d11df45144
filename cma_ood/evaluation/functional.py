"""Pure OoD-detection metrics (functional core, no state).

Convention used throughout (MOS / NegLabel / CMA): in-distribution (ID) is the
positive class and a *higher* score means *more in-distribution*. All metrics
are returned in percent.
"""
from typing import Dict, Sequence, Union

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]

#: ID recall (true-positive rate) at which FPR95 is read.
RECALL_LEVEL = 0.95


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


def ood_metrics(id_scores: ArrayLike,
                ood_scores: ArrayLike) -> Dict[str, float]:
    """AUROC, FPR95, AUPR-In and AUPR-Out of an ID/OoD score split.

    ID is the positive class; higher score = more in-distribution.

    Args:
        id_scores: (n_id,) scores of the ID test set. numpy array, list or
            torch tensor (any float dtype/device; converted to float64 CPU).
        ood_scores: (n_ood,) scores of one OoD set, same conventions.

    Returns:
        dict of Python floats in percent (0-100):

        - ``AUROC``: ``roc_auc_score`` with ID as positive.
        - ``FPR95``: fraction of OoD accepted at 95% ID recall, pessimistic
          tie handling (see :func:`fpr_at_recall`); lower is better.
        - ``AUPR_IN``: ``average_precision_score`` with ID positive.
        - ``AUPR_OUT``: ``average_precision_score`` with OoD positive and
          the negated score.

    Raises:
        ValueError: if either input is not 1-D, is empty or holds NaN/inf;
            the message names ``id_scores`` or ``ood_scores``.
    """
    ind = _as_scores(id_scores, 'id_scores')
    ood = _as_scores(ood_scores, 'ood_scores')
    scores = np.concatenate([ind, ood])
    is_id = np.concatenate(
        [np.ones(ind.size, dtype=np.int64),
         np.zeros(ood.size, dtype=np.int64)])
    return {
        'AUROC': 100.0 * float(roc_auc_score(is_id, scores)),
        'FPR95': 100.0 * fpr_at_recall(ind, ood, RECALL_LEVEL),
        'AUPR_IN': 100.0 * float(average_precision_score(is_id, scores)),
        'AUPR_OUT':
        100.0 * float(average_precision_score(1 - is_id, -scores)),
    }
