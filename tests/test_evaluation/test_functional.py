"""Tests of cma_ood.evaluation.ood_metrics (higher = ID; 'mos' default,
'cma' and 'openood' metric protocols)."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from cma_ood.evaluation import ood_metrics
from cma_ood.evaluation.functional import fpr_at_tpr_interp

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


# ================================================================ protocols
# ---------------------------------------------------------------- references
def roc_points(pos, neg):
    """ROC points (fpr, tpr) of ``pos`` (positive) vs ``neg``, accepting
    score >= t, one point per distinct pooled score (descending) after the
    (0, 0) start; no point dropped. Also returns the (d_neg, d_pos) count
    step into each point."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    pts, steps, prev = [(0.0, 0.0)], [None], (0, 0)
    for t in sorted(set(np.r_[pos, neg].tolist()), reverse=True):
        fp, tp = np.count_nonzero(neg >= t), np.count_nonzero(pos >= t)
        pts.append((fp / neg.size, tp / pos.size))
        steps.append((fp - prev[0], tp - prev[1]))
        prev = (fp, tp)
    return pts, steps


def cma_fpr95_ref(id_scores, ood_scores):
    """CMA's FPR95 (ID positive) re-stated on the undropped ROC points: if
    some points have TPR exactly 0.95, the highest of their FPRs (the value
    np.interp returns for a repeated abscissa); otherwise the straight line
    between the last point below 0.95 and the first above it. (Dropping
    collinear points, as sklearn does, changes neither.)"""
    pts, _ = roc_points(id_scores, ood_scores)
    at = [f for f, t in pts if t == RECALL]
    if at:
        return 100.0 * max(at)
    below = [(f, t) for f, t in pts if t < RECALL][-1]
    above = [(f, t) for f, t in pts if t > RECALL][0]
    w = (RECALL - below[1]) / (above[1] - below[1])
    return 100.0 * (below[0] + w * (above[0] - below[0]))


def openood_fpr95_ref(id_scores, ood_scores):
    """OpenOOD's FPR@95: OoD positive (flag score <= s), the ROC points
    thinned as sklearn's drop_intermediate does (a point whose incoming and
    outgoing count steps are equal lies inside a straight run and is
    dropped; the first and last points stay), then the FPR (share of ID
    flagged) of the first point whose TPR (share of OoD flagged) >= 0.95."""
    ood_neg = -np.asarray(ood_scores, dtype=np.float64)
    id_neg = -np.asarray(id_scores, dtype=np.float64)
    pts, steps = roc_points(ood_neg, id_neg)
    # sklearn thins before prepending (0, 0): indices 1..n, ends kept
    kept = [pts[0]] + [
        pts[i] for i in range(1, len(pts))
        if i in (1, len(pts) - 1) or steps[i] != steps[i + 1]]
    return 100.0 * next(f for f, t in kept if t >= RECALL)


def trapezoid_aupr_ref(pos, neg):
    """Trapezoid area under (recall, precision): one point per distinct
    score (descending, accept >= t) plus the start (recall 0, precision 1),
    as sklearn's precision_recall_curve lays them out."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    area, (r0, p0) = 0.0, (0.0, 1.0)
    for t in sorted(set(np.r_[pos, neg].tolist()), reverse=True):
        tp, fp = np.count_nonzero(pos >= t), np.count_nonzero(neg >= t)
        r, p = tp / pos.size, tp / (tp + fp)
        area += (r - r0) * (p + p0) / 2
        r0, p0 = r, p
    return 100.0 * area


# ------------------------------------------------------ random data, ties
@pytest.mark.parametrize('n_id,n_ood,decimals', [
    (5, 40, 1), (7, 3, 0), (20, 20, 1), (37, 11, 1), (200, 300, 1),
    (999, 1001, 0)])
@pytest.mark.parametrize('seed', [0, 1])
def test_cma_matches_references_with_ties(n_id, n_ood, decimals, seed):
    rng = np.random.default_rng(1000 * seed + n_id)
    ind, ood = tied_scores(rng, n_id, n_ood, decimals)
    m = ood_metrics(ind, ood, protocol='cma')
    assert set(m) == {'AUROC', 'FPR95', 'AUPR_IN', 'AUPR_OUT'}
    assert all(isinstance(v, float) for v in m.values())
    assert m['AUROC'] == pytest.approx(auroc_mann_whitney(ind, ood), abs=1e-9)
    assert m['FPR95'] == pytest.approx(cma_fpr95_ref(ind, ood), abs=1e-9)
    assert m['AUPR_IN'] == pytest.approx(trapezoid_aupr_ref(ind, ood),
                                         abs=1e-9)
    # AUPR-Out: OoD positive, score negated.
    assert m['AUPR_OUT'] == pytest.approx(trapezoid_aupr_ref(-ood, -ind),
                                          abs=1e-9)


@pytest.mark.parametrize('n_id,n_ood,decimals', [
    (5, 40, 1), (7, 3, 0), (20, 20, 1), (37, 11, 1), (200, 300, 1),
    (999, 1001, 0)])
@pytest.mark.parametrize('seed', [0, 1])
def test_openood_matches_references_with_ties(n_id, n_ood, decimals, seed):
    rng = np.random.default_rng(1000 * seed + n_id)
    ind, ood = tied_scores(rng, n_id, n_ood, decimals)
    m = ood_metrics(ind, ood, protocol='openood')
    assert m['FPR95'] == pytest.approx(openood_fpr95_ref(ind, ood), abs=1e-9)
    # AUROC with OoD positive equals the ID-positive ('mos') one
    assert m['AUROC'] == pytest.approx(ood_metrics(ind, ood)['AUROC'],
                                       abs=1e-9)
    assert m['AUROC'] == pytest.approx(auroc_mann_whitney(ind, ood), abs=1e-9)
    assert m['AUPR_IN'] == pytest.approx(trapezoid_aupr_ref(ind, ood),
                                         abs=1e-9)
    assert m['AUPR_OUT'] == pytest.approx(trapezoid_aupr_ref(-ood, -ind),
                                          abs=1e-9)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_mos_is_the_default_and_unchanged_by_the_keyword(seed):
    rng = np.random.default_rng(seed)
    ind, ood = tied_scores(rng, 50, 70)
    m = ood_metrics(ind, ood, protocol='mos')
    assert m == ood_metrics(ind, ood)
    assert m['FPR95'] == fpr95_slow(ind, ood)
    assert m['AUPR_IN'] == pytest.approx(
        average_precision_slow(ind, ood), abs=1e-9)


# ------------------------------------------------------ closed-form cases
# ID {1, 3, 4, 5}, OoD {0, 1, 2, 6}, ID positive, accept score >= t:
#   t:      6     5     4     3     2     1     0
#   TP:     0     1     2     3     3     4     4
#   FP:     1     1     1     1     2     3     4
SMALL_ID = np.array([1.0, 3.0, 4.0, 5.0])
SMALL_OOD = np.array([0.0, 1.0, 2.0, 6.0])


def test_cma_small_case_by_hand():
    m = ood_metrics(SMALL_ID, SMALL_OOD, protocol='cma')
    # TPR 0.95 lies on the segment (FPR, TPR) (1/2, 3/4) -> (3/4, 1) that
    # the tie at t = 1 draws: FPR = 1/2 + (0.2 / 0.25) * 1/4 = 0.7.
    assert m['FPR95'] == pytest.approx(70.0, abs=1e-12)
    # 10.5 of 16 pairs ordered right (the tie 1 vs 1 counts half)
    assert m['AUROC'] == pytest.approx(100.0 * 10.5 / 16, abs=1e-12)
    # trapezoids over (recall, precision): (0, 1) (0, 0) (1/4, 1/2)
    # (1/2, 2/3) (3/4, 3/4) (3/4, 3/5) (1, 4/7) (1, 1/2)
    q = Fraction
    aupr_in = (q(1, 4) * (0 + q(1, 2)) / 2 + q(1, 4) * (q(1, 2) + q(2, 3)) / 2
               + q(1, 4) * (q(2, 3) + q(3, 4)) / 2
               + q(1, 4) * (q(3, 5) + q(4, 7)) / 2)
    assert aupr_in == q(1787, 3360)
    assert m['AUPR_IN'] == pytest.approx(100.0 * float(aupr_in), abs=1e-12)


def test_trapezoid_aupr_differs_from_average_precision():
    cma = ood_metrics(SMALL_ID, SMALL_OOD, protocol='cma')
    mos = ood_metrics(SMALL_ID, SMALL_OOD)
    # AP = sum of dRecall * precision = 1/4 (1/2 + 2/3 + 3/4 + 4/7)
    ap = Fraction(1, 4) * (Fraction(1, 2) + Fraction(2, 3) + Fraction(3, 4)
                           + Fraction(4, 7))
    assert mos['AUPR_IN'] == pytest.approx(100.0 * float(ap), abs=1e-12)
    assert cma['AUPR_IN'] == pytest.approx(100.0 * 1787 / 3360, abs=1e-12)
    assert mos['AUPR_IN'] - cma['AUPR_IN'] > 9.0  # 62.20 vs 53.18
    # AUPR-Out, OoD positive on -score: OoD {0, -1, -2, -6} vs ID
    # {-1, -3, -4, -5}; (recall, precision) from t = 0 down to t = -6:
    # (1/4, 1) (1/2, 2/3) (3/4, 3/4) (3/4, 3/5) (3/4, 1/2) (3/4, 3/7) (1, 1/2)
    q = Fraction
    aupr_out = (q(1, 4) * (1 + 1) / 2 + q(1, 4) * (1 + q(2, 3)) / 2
                + q(1, 4) * (q(2, 3) + q(3, 4)) / 2
                + q(1, 4) * (q(3, 7) + q(1, 2)) / 2)
    assert aupr_out == q(505, 672)
    assert cma['AUPR_OUT'] == pytest.approx(100.0 * float(aupr_out),
                                            abs=1e-12)
    ap_out = q(1, 4) * (1 + q(2, 3) + q(3, 4) + q(1, 2))
    assert mos['AUPR_OUT'] == pytest.approx(100.0 * float(ap_out), abs=1e-12)
    assert cma['AUPR_OUT'] - mos['AUPR_OUT'] > 2.0  # 75.15 vs 72.92


def test_protocols_disagree_on_fpr95_small_case():
    # 'mos': recall 1 is closest to 0.95 -> t = lowest ID score 1 -> OoD
    # 1, 2, 6 accepted (3/4). 'openood': catching 95% of the 4 OoD means
    # all 4, i.e. flagging every score <= 6 -> every ID flagged (4/4).
    assert ood_metrics(SMALL_ID, SMALL_OOD)['FPR95'] == 75.0
    assert ood_metrics(SMALL_ID, SMALL_OOD,
                       protocol='openood')['FPR95'] == 100.0
    aurocs = {p: ood_metrics(SMALL_ID, SMALL_OOD, protocol=p)['AUROC']
              for p in ('mos', 'cma', 'openood')}
    assert aurocs['openood'] == pytest.approx(aurocs['mos'], abs=1e-12)
    assert aurocs['cma'] == pytest.approx(aurocs['mos'], abs=1e-12)


def test_cma_exact_tpr_level_takes_the_highest_fpr_there():
    # ID = 1..20: TPR 19/20 == 0.95 for t = 2 (OoD 2, 3.5, 25 accepted:
    # 3/6) and t = 1.5 (the two 1.5 too: 5/6). np.interp on the repeated
    # abscissa 0.95 returns the last of them, 5/6.
    ind = np.arange(1, 21, dtype=np.float64)
    ood = np.array([0.5, 1.5, 1.5, 2.0, 3.5, 25.0])
    assert ood_metrics(ind, ood, protocol='cma')['FPR95'] == \
        pytest.approx(100.0 * 5 / 6, abs=1e-12)
    # Without an OoD sample between the ID values 1 and 2: only t = 2 has
    # TPR 0.95 -> OoD 2, 3.5 and 25 accepted, 3 of 5.
    ood2 = np.array([0.5, 1.0, 2.0, 3.5, 25.0])
    assert ood_metrics(ind, ood2, protocol='cma')['FPR95'] == \
        pytest.approx(100.0 * 3 / 5, abs=1e-12)


def test_cma_interpolates_between_id_samples():
    # ID = 1..10, OoD = {0.5, 1.5, 3.5, 20}: the last point with TPR 0.9 is
    # t = 1.5 (OoD 1.5, 3.5, 20 accepted: FPR 3/4), the next is t = 1 (TPR
    # 1, FPR 3/4): a vertical segment, so FPR95 = 3/4 ('mos' also gives
    # 3/4 here: recall 0.9 at its lowest threshold 1.5).
    ind = np.arange(1, 11, dtype=np.float64)
    ood = np.array([0.5, 1.5, 3.5, 20.0])
    assert ood_metrics(ind, ood, protocol='cma')['FPR95'] == \
        pytest.approx(75.0, abs=1e-12)
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(75.0)
    # An OoD tie at the lowest ID score instead: the segment runs from
    # (2/4, 0.9) (t = 2) to (3/4, 1) (t = 1); TPR 0.95 is halfway, so
    # FPR95 = 5/8 ('mos': recall 0.9, t = 2, 2/4).
    ood = np.array([0.5, 1.0, 3.5, 20.0])
    assert ood_metrics(ind, ood, protocol='cma')['FPR95'] == \
        pytest.approx(100.0 * 5 / 8, abs=1e-12)
    assert ood_metrics(ind, ood)['FPR95'] == pytest.approx(50.0)


def test_openood_fpr95_by_hand():
    # OoD 0..19, ID {5.5, 18.5, 20, ..., 27}; flag as OoD when score <= s.
    # 95% of OoD (19 of 20) is first caught at s = 18, where one ID (5.5)
    # is flagged: FPR@95 = 1/10.
    ood = np.arange(20, dtype=np.float64)
    ind = np.r_[5.5, 18.5, np.arange(20, 28, dtype=np.float64)]
    m = ood_metrics(ind, ood, protocol='openood')
    assert m['FPR95'] == pytest.approx(10.0, abs=1e-12)
    assert m['AUROC'] == pytest.approx(ood_metrics(ind, ood)['AUROC'],
                                       abs=1e-9)
    # ID-above-OoD pairs: 8 * 20 (ID 20..27) + 19 (18.5) + 6 (5.5) of 200
    assert m['AUROC'] == pytest.approx(100.0 * 185 / 200, abs=1e-9)


def test_openood_follows_roc_curve_drop_intermediate():
    # OoD 0..16 alone, then ID/OoD tied pairs at 17.5, 18.5, 19.5, then ID
    # 30..36. Flag score <= s: s = 17.5 -> OoD 18/20, ID 1/10; s = 18.5 ->
    # OoD 19/20 = 0.95, ID 2/10; s = 19.5 -> OoD 20/20, ID 3/10. The point
    # at 18.5 lies inside a straight run of equal steps, so sklearn's
    # roc_curve (drop_intermediate=True, as OpenOOD calls it) drops it and
    # the first point with TPR >= 0.95 is s = 19.5: FPR@95 = 3/10, not 2/10.
    pairs = np.array([17.5, 18.5, 19.5])
    ood = np.r_[np.arange(17, dtype=np.float64), pairs]
    ind = np.r_[pairs, np.arange(30, 37, dtype=np.float64)]
    assert ind.size == 10 and ood.size == 20
    m = ood_metrics(ind, ood, protocol='openood')
    assert m['FPR95'] == pytest.approx(30.0, abs=1e-12)
    assert openood_fpr95_ref(ind, ood) == pytest.approx(30.0, abs=1e-12)


def test_fpr_at_tpr_interp_branches():
    # no point reaches 0.95 -> 0
    assert fpr_at_tpr_interp([0.0, 0.5, 1.0], [0.0, 0.5, 0.9]) == 0.0
    # every point reaches it -> lowest FPR among them
    assert fpr_at_tpr_interp([0.3, 0.2, 0.6], [0.95, 0.96, 1.0]) == 0.2
    # otherwise linear interpolation: 0.4 + (0.15 / 0.2) * 0.4 = 0.7
    assert fpr_at_tpr_interp([0.0, 0.4, 0.8], [0.0, 0.8, 1.0]) == \
        pytest.approx(0.7, abs=1e-12)
    # on the curves ood_metrics builds (from (0, 0) to (1, 1)) it is
    # always the interpolation: perfect separation -> 0, inverted -> 1
    assert ood_metrics([2.0, 3.0], [0.0, 1.0], protocol='cma')['FPR95'] == 0.0
    assert ood_metrics([0.0, 1.0], [2.0, 3.0],
                       protocol='cma')['FPR95'] == 100.0


@pytest.mark.parametrize('protocol', ['cma', 'openood'])
def test_protocol_extremes(protocol):
    rng = np.random.default_rng(0)
    m = ood_metrics(rng.uniform(10, 11, 300), rng.uniform(0, 1, 200),
                    protocol=protocol)
    assert m['AUROC'] == pytest.approx(100.0)
    assert m['FPR95'] == 0.0
    assert m['AUPR_IN'] == pytest.approx(100.0)
    assert m['AUPR_OUT'] == pytest.approx(100.0)
    m = ood_metrics(np.zeros(10), np.zeros(7), protocol=protocol)
    assert m['AUROC'] == pytest.approx(50.0)
    # the ROC curve is the diagonal (0, 0) -> (1, 1): 'cma' interpolates
    # on it (0.95), 'openood' takes its end point (every ID flagged)
    assert m['FPR95'] == pytest.approx(
        dict(cma=95.0, openood=100.0)[protocol], abs=1e-12)
    # one point (recall 1, precision n_pos / n) after the start (0, 1)
    assert m['AUPR_IN'] == pytest.approx(100.0 * (1 + 10 / 17) / 2)
    assert m['AUPR_OUT'] == pytest.approx(100.0 * (1 + 7 / 17) / 2)


@pytest.mark.parametrize('protocol', ['cma', 'openood'])
def test_protocol_input_types_and_validation(protocol):
    rng = np.random.default_rng(11)
    ind, ood = tied_scores(rng, 150, 120, decimals=2)
    ind32, ood32 = ind.astype(np.float32), ood.astype(np.float32)
    ref = ood_metrics(ind32, ood32, protocol=protocol)
    assert ood_metrics(torch.from_numpy(ind32), torch.from_numpy(ood32),
                       protocol=protocol) == ref
    assert ood_metrics(ind32.tolist(), ood32.tolist(),
                       protocol=protocol) == ref
    with pytest.raises(ValueError, match='ood_scores.*non-finite'):
        ood_metrics(ind, np.r_[ood, np.nan], protocol=protocol)
    with pytest.raises(ValueError, match='id_scores is empty'):
        ood_metrics([], ood, protocol=protocol)


@pytest.mark.parametrize('bad', ['MOS', 'open-ood', '', None, 1])
def test_unknown_protocol_raises(bad):
    with pytest.raises(ValueError) as info:
        ood_metrics([1.0, 2.0], [0.0], protocol=bad)
    msg = str(info.value)
    assert repr(bad) in msg
    assert "'mos', 'cma', 'openood'" in msg
