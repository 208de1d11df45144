"""Tests of cma_ood.evaluation.ood_metrics (ID positive, higher = ID)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from cma_ood.evaluation import ood_metrics

RECALL = 0.95


# ---------------------------------------------------------------- references
def fpr95_slow(id_scores, ood_scores):
    """FPR95 straight from the words of REFERENCE.md, one threshold at a time.

    Sweep t over the distinct pooled score values that are operating points
    (t <= max pooled score, t >= lowest ID score: lower thresholds keep
    recall 1 and only add false positives; the published code drops them).
    Accept score >= t. Keep the points whose ID recall (float64 TP / n_id) is
    closest to 0.95, take the lowest threshold among them, return its FPR.
    """
    id_scores = np.asarray(id_scores, dtype=np.float64)
    ood_scores = np.asarray(ood_scores, dtype=np.float64)
    best = None  # (distance, threshold, fpr)
    for t in sorted(set(np.concatenate([id_scores, ood_scores]).tolist())):
        if t < id_scores.min():
            continue
        tpr = np.count_nonzero(id_scores >= t) / id_scores.size
        fpr = np.count_nonzero(ood_scores >= t) / ood_scores.size
        dist = abs(tpr - RECALL)
        # ascending t: only a strictly smaller distance replaces the current
        # choice, so among equal distances the lowest threshold is kept.
        if best is None or dist < best[0]:
            best = (dist, t, fpr)
    return 100.0 * best[2]


def fpr95_roc_curve(id_scores, ood_scores):
    """FPR95 via sklearn's operating points at every distinct threshold."""
    id_scores = np.asarray(id_scores, dtype=np.float64)
    ood_scores = np.asarray(ood_scores, dtype=np.float64)
    y = np.r_[np.ones(id_scores.size), np.zeros(ood_scores.size)]
    s = np.r_[id_scores, ood_scores]
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    keep = thr >= id_scores.min()
    fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    dist = np.abs(tpr - RECALL)
    cand = np.flatnonzero(dist == dist.min())
    return 100.0 * fpr[cand[np.argmin(thr[cand])]]


def auroc_mann_whitney(id_scores, ood_scores):
    """P(id > ood) + P(id == ood) / 2, by brute force over all pairs."""
    a = np.asarray(id_scores, dtype=np.float64)[:, None]
    b = np.asarray(ood_scores, dtype=np.float64)[None, :]
    return 100.0 * ((a > b).mean() + 0.5 * (a == b).mean())


def average_precision_slow(pos, neg):
    """sum_t (R_t - R_{t-1}) * P_t over distinct thresholds t, descending."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(np.r_[pos, neg].tolist()), reverse=True):
        tp = np.count_nonzero(pos >= t)
        fp = np.count_nonzero(neg >= t)
        recall = tp / pos.size
        ap += (recall - prev_recall) * tp / (tp + fp)
        prev_recall = recall
    return 100.0 * ap


def tied_scores(rng, n_id, n_ood, decimals=1):
    """Overlapping Gaussian scores rounded so that many values tie."""
    ind = np.round(rng.normal(1.0, 1.0, n_id), decimals)
    ood = np.round(rng.normal(0.0, 1.0, n_ood), decimals)
    return ind, ood


# ------------------------------------------------------ random data, ties
@pytest.mark.parametrize('n_id,n_ood,decimals', [
    (5, 40, 1), (7, 3, 0), (10, 25, 1), (13, 50, 0), (20, 20, 1),
    (37, 11, 1), (200, 300, 1), (1000, 700, 2), (999, 1001, 0)])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_references_with_ties(n_id, n_ood, decimals, seed):
    rng = np.random.default_rng(1000 * seed + n_id)
    ind, ood = tied_scores(rng, n_id, n_ood, decimals)
    assert np.unique(np.r_[ind, ood]).size < ind.size + ood.size  # ties
    m = ood_metrics(ind, ood)
    assert set(m) == {'AUROC', 'FPR95', 'AUPR_IN', 'AUPR_OUT'}
    assert all(isinstance(v, float) for v in m.values())
    assert m['AUROC'] == pytest.approx(auroc_mann_whitney(ind, ood), abs=1e-9)
    assert m['FPR95'] == fpr95_slow(ind, ood)
    assert m['FPR95'] == fpr95_roc_curve(ind, ood)
    assert m['AUPR_IN'] == pytest.approx(
        average_precision_slow(ind, ood), abs=1e-9)
    # AUPR-Out: OoD positive, score negated.
    assert m['AUPR_OUT'] == pytest.approx(
        average_precision_slow(-ood, -ind), abs=1e-9)


def test_large_input_matches_roc_curve_route():
    rng = np.random.default_rng(7)
    ind, ood = tied_scores(rng, 1_000_000, 500_000, decimals=3)
    m = ood_metrics(ind, ood)
    assert m['FPR95'] == fpr95_roc_curve(ind, ood)
    assert 0.0 < m['FPR95'] < 100.0


# ------------------------------------------------------ closed-form cases
def test_pessimistic_threshold_counts_ood_between_id_samples():
    # ID = 1..20: recall 19/20 == 0.95 exactly for t in (1, 2]. The lowest
    # distinct score in that interval is the OoD value 1.5, so OoD at
    # 1.5, 1.5, 2, 3.5, 25 are accepted: 5 of 6. (t = 2 would give 3/6.)
    ind = np.arange(1, 21, dtype=np.float64)
    ood = np.array([0.5, 1.5, 1.5, 2.0, 3.5, 25.0])
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(100.0 * 5 / 6)
    # Without an OoD sample between 1 and 2 the threshold is the ID value 2.
    ood2 = np.array([0.5, 1.0, 2.0, 3.5, 25.0])
    assert ood_metrics(ind, ood2)['FPR95'] == pytest.approx(100.0 * 3 / 5)


def test_ten_id_samples_follow_float_closeness():
    # ID = 1..10: recall 0.9 (t in (1, 2]) and 1.0 (t = 1) are equally far
    # from 0.95 in exact arithmetic; in float64 |0.9 - 0.95| < |1.0 - 0.95|,
    # so recall 0.9 is taken as in the published code. The lowest score
    # above 1 is the OoD value 1.2: OoD 1.2, 5 and 11 are accepted (3 of 4).
    assert abs(0.9 - RECALL) < abs(1.0 - RECALL)
    ind = np.arange(1, 11, dtype=np.float64)
    ood = np.array([1.0, 1.2, 5.0, 11.0])
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(75.0)


def test_recall_one_stops_at_lowest_id_score():
    # ID = 1..5: recalls 0.8 and 1.0; 1.0 is closest, the threshold is the
    # lowest ID score 1 (not the OoD value 0.5 below it): 2 of 3 accepted.
    ind = np.arange(1, 6, dtype=np.float64)
    ood = np.array([0.5, 1.0, 3.0])
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(100.0 * 2 / 3)


def test_tied_id_scores():
    # 10 ID at 1 and 10 at 2: recalls 0.5 and 1.0 -> 1.0, t = 1.
    ind = np.r_[np.ones(10), 2 * np.ones(10)]
    ood = np.array([0.0, 0.99, 1.0, 1.5, 3.0])
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(60.0)
    # 19 ID at 5 and one at 1: recall 0.95 for t in (1, 5]; the lowest
    # score there is the OoD value 2, so OoD 2 and 3 are accepted.
    ind = np.r_[5 * np.ones(19), 1.0]
    ood = np.array([2.0, 3.0, 0.0])
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(100.0 * 2 / 3)


def test_perfect_separation():
    rng = np.random.default_rng(0)
    ind = rng.uniform(10, 11, 300)
    ood = rng.uniform(0, 1, 200)
    m = ood_metrics(ind, ood)
    assert m['AUROC'] == 100.0
    assert m['FPR95'] == 0.0
    assert m['AUPR_IN'] == pytest.approx(100.0)
    assert m['AUPR_OUT'] == pytest.approx(100.0)


def test_inverted_separation():
    rng = np.random.default_rng(0)
    ind = rng.uniform(0, 1, 300)
    ood = rng.uniform(10, 11, 200)
    m = ood_metrics(ind, ood)
    assert m['AUROC'] == 0.0
    assert m['FPR95'] == 100.0
    # Every OoD outranks every ID: precision n_id / (n_id + n_ood) at all
    # recalls once the OoD block is passed.
    assert m['AUPR_IN'] == pytest.approx(
        average_precision_slow(ind, ood), abs=1e-9)
    assert m['AUPR_IN'] < 100.0 * 300 / 500 + 1e-9


def test_identical_distributions():
    # Same 200 distinct values in both sets: FPR == TPR at every threshold,
    # recall 190/200 = 0.95 is reachable, so FPR95 = 95; AUROC = 1/2.
    # AP: every threshold adds one ID and one OoD -> precision 1/2.
    scores = np.random.default_rng(3).permutation(200).astype(np.float64)
    m = ood_metrics(scores, scores.copy())
    assert m['AUROC'] == pytest.approx(50.0)
    assert m['FPR95'] == pytest.approx(95.0)
    assert m['AUPR_IN'] == pytest.approx(50.0)
    assert m['AUPR_OUT'] == pytest.approx(50.0)


def test_all_scores_equal():
    m = ood_metrics(np.zeros(10), np.zeros(7))
    assert m['AUROC'] == pytest.approx(50.0)
    assert m['FPR95'] == 100.0
    assert m['AUPR_IN'] == pytest.approx(100.0 * 10 / 17)
    assert m['AUPR_OUT'] == pytest.approx(100.0 * 7 / 17)


def test_shift_and_scale_invariance():
    rng = np.random.default_rng(5)
    ind, ood = tied_scores(rng, 300, 400)
    base = ood_metrics(ind, ood)
    moved = ood_metrics(3.0 * ind + 7.0, 3.0 * ood + 7.0)
    for key in base:
        assert moved[key] == pytest.approx(base[key], abs=1e-9)


# ------------------------------------------------------ input types
def test_tensor_and_list_inputs():
    rng = np.random.default_rng(11)
    ind, ood = tied_scores(rng, 150, 120, decimals=2)
    ind32, ood32 = ind.astype(np.float32), ood.astype(np.float32)
    ref = ood_metrics(ind32, ood32)
    assert ood_metrics(torch.from_numpy(ind32), torch.from_numpy(ood32)) == ref
    assert ood_metrics(ind32.tolist(), ood32.tolist()) == ref
    t = torch.from_numpy(ind32).requires_grad_()
    assert ood_metrics(t, torch.from_numpy(ood32)) == ref
    assert ood_metrics(torch.tensor(ind).half(), ood)['FPR95'] == \
        fpr95_slow(torch.tensor(ind).half().double().numpy(), ood)


# ------------------------------------------------------ errors
@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    good = np.arange(5, dtype=np.float64)
    with pytest.raises(ValueError, match='id_scores.*non-finite'):
        ood_metrics(np.r_[good, bad], good)
    with pytest.raises(ValueError, match='ood_scores.*non-finite'):
        ood_metrics(good, torch.tensor(np.r_[good, bad]))


def test_empty_scores_raise():
    with pytest.raises(ValueError, match='id_scores is empty'):
        ood_metrics([], [1.0, 2.0])
    with pytest.raises(ValueError, match='ood_scores is empty'):
        ood_metrics(np.ones(3), torch.empty(0))


def test_not_1d_raises():
    with pytest.raises(ValueError, match='id_scores must be 1-D'):
        ood_metrics(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match='ood_scores must be 1-D'):
        ood_metrics(np.ones(3), np.float64(1.0))
