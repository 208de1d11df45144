"""Tests of NegLabel mining and scoring (cma_ood.models.ood_scorers.functional.neglabel)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cma_ood.models.ood_scorers.functional.neglabel import (label_affinity, mine_negative_labels,
                                     neglabel_group_indices, neglabel_score)


def normed(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


# ------------------------------------------------- slow reference mining
def affinity_slow(cand, pos, percentile):
    """Per candidate: linear-interpolation quantile of its C cosine sims."""
    cand = np.asarray(cand, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    return np.array([np.quantile(pos @ c, percentile) for c in cand])


def select_slow(affinity, ratio):
    """First int(len * ratio) indices by (ascending affinity, index)."""
    order = sorted(range(len(affinity)), key=lambda i: (affinity[i], i))
    return order[:int(len(affinity) * ratio)]


@pytest.mark.parametrize('percentile,ratio', [(0.95, 0.15), (0.5, 0.3),
                                              (1.0, 0.5), (0.0, 0.1)])
def test_mining_matches_slow_rule(percentile, ratio):
    pos = normed(37, 16, 0)
    nouns = normed(301, 16, 1)
    adjs = normed(123, 16, 2)
    noun_idx, adj_idx = mine_negative_labels(pos, nouns, adjs, percentile,
                                             ratio)
    assert noun_idx.dtype == adj_idx.dtype == torch.long
    noun_aff = affinity_slow(nouns, pos, percentile)
    adj_aff = affinity_slow(adjs, pos, percentile)
    assert noun_idx.tolist() == select_slow(noun_aff, ratio)
    assert adj_idx.tolist() == select_slow(adj_aff, ratio)
    # Ascending-affinity order, and every kept label is below every dropped.
    kept = noun_aff[noun_idx.numpy()]
    assert np.all(np.diff(kept) >= 0)
    dropped = np.delete(noun_aff, noun_idx.numpy())
    assert kept.max() <= dropped.min()


def test_affinity_matches_numpy_quantile():
    pos = normed(50, 8, 3)
    cand = normed(200, 8, 4)
    np.testing.assert_allclose(
        label_affinity(cand, pos, 0.95).numpy(),
        affinity_slow(cand, pos, 0.95), rtol=0, atol=1e-12)


def test_affinity_closed_form_quantile():
    # Unit-vector ID labels e_0..e_4: the sims of a candidate are its own
    # coordinates. Sorted sims s = (-0.5, -0.1, 0.1, 0.3, 0.8) / |.|; the
    # 0.95-quantile of 5 values sits at position 0.95 * 4 = 3.8:
    # s[3] + 0.8 * (s[4] - s[3]).
    pos = torch.eye(5, dtype=torch.float64)
    raw = torch.tensor([[0.3, -0.5, 0.8, 0.1, -0.1]], dtype=torch.float64)
    cand = raw / raw.norm()
    s = sorted(cand[0].tolist())
    expected = s[3] + 0.8 * (s[4] - s[3])
    assert label_affinity(cand, pos, 0.95).item() == pytest.approx(
        expected, abs=1e-15)
    assert label_affinity(cand, pos, 1.0).item() == pytest.approx(s[4])
    assert label_affinity(cand, pos, 0.5).item() == pytest.approx(s[2])


@pytest.mark.parametrize('chunk_size', [1, 3, 7, 64])
def test_chunking_does_not_change_result(chunk_size):
    pos = normed(29, 12, 5)
    nouns = normed(157, 12, 6)
    adjs = normed(41, 12, 7)
    ref = mine_negative_labels(pos, nouns, adjs, chunk_size=100000)
    out = mine_negative_labels(pos, nouns, adjs, chunk_size=chunk_size)
    assert out[0].tolist() == ref[0].tolist()
    assert out[1].tolist() == ref[1].tolist()
    np.testing.assert_allclose(
        label_affinity(nouns, pos, 0.95, chunk_size=chunk_size).numpy(),
        affinity_slow(nouns, pos, 0.95), rtol=0, atol=1e-12)


def test_float32_and_half_inputs():
    pos, nouns = normed(40, 16, 8), normed(90, 16, 9)
    ref = affinity_slow(nouns, pos, 0.95)
    a32 = label_affinity(nouns.float(), pos.float(), 0.95, chunk_size=13)
    assert a32.dtype == torch.float32
    np.testing.assert_allclose(a32.numpy(), ref, atol=1e-6)
    a16 = label_affinity(nouns.half(), pos.half(), 0.95)
    assert a16.dtype == torch.float32  # upcast before the matmul
    np.testing.assert_allclose(a16.numpy(), ref, atol=5e-3)


def test_many_classes_exceeding_quantile_limit():
    # 4100 x 4200 > 2**24 elements, which older torch releases refuse in a
    # single torch.quantile call; the chunk is shrunk automatically and the
    # result must not depend on it.
    pos = normed(4200, 4, 10, dtype=torch.float32)
    cand = normed(4100, 4, 11, dtype=torch.float32)
    assert cand.shape[0] * pos.shape[0] > 2**24
    out = label_affinity(cand, pos, 0.95, chunk_size=4096)
    ref = label_affinity(cand, pos, 0.95, chunk_size=500)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize('n,m,ratio', [(70, 33, 0.15), (100, 20, 0.15),
                                       (7, 6, 0.15), (50, 50, 0.0),
                                       (13, 9, 1.0), (1000, 3, 0.07)])
def test_counts_are_int_len_times_ratio(n, m, ratio):
    pos = normed(10, 8, 12)
    noun_idx, adj_idx = mine_negative_labels(pos, normed(n, 8, 13),
                                             normed(m, 8, 14), ratio=ratio)
    assert noun_idx.numel() == int(n * ratio)
    assert adj_idx.numel() == int(m * ratio)
    assert len(set(noun_idx.tolist())) == noun_idx.numel()
    if ratio == 1.0:
        assert sorted(noun_idx.tolist()) == list(range(n))


def test_ties_broken_by_index():
    pos = torch.eye(3, dtype=torch.float64)
    # Candidates 0 and 2 are identical (same affinity), 1 is more ID-like.
    nouns = F.normalize(torch.tensor([[-1.0, -1.0, 0.0], [1.0, 0.0, 0.0],
                                      [-1.0, -1.0, 0.0]],
                                     dtype=torch.float64), dim=1)
    noun_idx, _ = mine_negative_labels(pos, nouns, nouns, ratio=1.0)
    assert noun_idx.tolist() == [0, 2, 1]


def test_empty_candidate_pool():
    noun_idx, adj_idx = mine_negative_labels(normed(5, 4, 0), normed(0, 4, 1),
                                             normed(10, 4, 2))
    assert noun_idx.numel() == 0 and noun_idx.dtype == torch.long
    assert adj_idx.numel() == 1


@pytest.mark.parametrize('kwargs,match', [
    (dict(percentile=1.5), 'percentile'),
    (dict(percentile=-0.1), 'percentile'),
    (dict(ratio=1.01), 'ratio'),
    (dict(ratio=-0.5), 'ratio'),
    (dict(chunk_size=0), 'chunk_size'),
])
def test_mining_rejects_bad_arguments(kwargs, match):
    pos, nouns, adjs = normed(5, 4, 0), normed(6, 4, 1), normed(7, 4, 2)
    with pytest.raises(ValueError, match=match):
        mine_negative_labels(pos, nouns, adjs, **kwargs)


def test_mining_rejects_bad_shapes():
    pos, nouns, adjs = normed(5, 4, 0), normed(6, 4, 1), normed(7, 4, 2)
    with pytest.raises(ValueError, match='pos_feats'):
        mine_negative_labels(pos[0], nouns, adjs)
    with pytest.raises(ValueError, match='noun_feats'):
        mine_negative_labels(pos, normed(6, 3, 1), adjs)
    with pytest.raises(ValueError, match='adj_feats'):
        mine_negative_labels(pos, nouns, adjs[None])
    with pytest.raises(ValueError, match='pos_feats'):
        mine_negative_labels(pos[:0], nouns, adjs)


# ------------------------------------------------------------- the score
def score_direct(pos_sim, neg_sim, tau):
    """sum_i e^{p_i/tau} / (sum_i e^{p_i/tau} + sum_j e^{n_j/tau}), float64."""
    p = np.exp(np.asarray(pos_sim, dtype=np.float64) / tau).sum(axis=1)
    n = np.exp(np.asarray(neg_sim, dtype=np.float64) / tau).sum(axis=1)
    return p / (p + n)


def sims(b, k, seed, scale=0.2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, k, generator=g, dtype=dtype) * 2 - 1) * scale


@pytest.mark.parametrize('tau', [0.01, 0.1])
def test_score_ngroup1_matches_formula(tau):
    pos, neg = sims(16, 50, 0), sims(16, 300, 1)
    out = neglabel_score(pos, neg, temperature=tau)
    assert out.shape == (16,)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), score_direct(pos, neg, tau),
                               rtol=1e-5)
    out64 = neglabel_score(pos.double(), neg.double(), temperature=tau)
    assert out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), score_direct(pos, neg, tau),
                               rtol=1e-12)


def test_score_ngroup1_does_not_shuffle():
    pos, neg = sims(4, 10, 2), sims(4, 30, 3)
    assert neglabel_group_indices(30, 1, seed=5).tolist() == [list(range(30))]
    torch.testing.assert_close(neglabel_score(pos, neg, seed=0),
                               neglabel_score(pos, neg, seed=123))


def test_score_stable_for_large_similarities():
    # cos ~ 1 over tau = 0.01 -> e^100 overflows a naive float32 formula.
    pos = torch.full((3, 10), 0.99)
    neg = torch.full((3, 20), 0.98)
    pos[1] = 0.5
    assert torch.isinf(torch.exp(pos / 0.01).sum(1)).any()
    out = neglabel_score(pos, neg)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), score_direct(pos, neg, 0.01),
                               rtol=1e-5)
    # Closed form of row 0: 10 e^99 / (10 e^99 + 20 e^98) = 1 / (1 + 2/e).
    assert out[0].item() == pytest.approx(1 / (1 + 2 / math.e), rel=1e-5)


def test_score_in_unit_interval_and_monotone():
    pos, neg = sims(8, 20, 4), sims(8, 40, 5)
    base = neglabel_score(pos, neg)
    assert torch.all(base > 0) and torch.all(base <= 1)
    assert torch.all(neglabel_score(pos + 0.05, neg) > base)
    assert torch.all(neglabel_score(pos, neg + 0.05) < base)


@pytest.mark.parametrize('k,ngroup', [(23, 5), (100, 10), (7, 7), (9, 2)])
def test_grouped_closed_form_identical_negatives(k, ngroup):
    # Every negative has the same sim n: each group of K // ngroup labels
    # gives P / (P + (K // ngroup) e^{n/t}), P = sum_i e^{p_i/t}.
    tau, n = 0.01, 0.2
    pos = torch.tensor([[0.1, 0.25, 0.3], [0.2, 0.21, 0.19]],
                       dtype=torch.float64)
    neg = torch.full((2, k), n, dtype=torch.float64)
    out = neglabel_score(pos, neg, temperature=tau, ngroup=ngroup, seed=3)
    p = np.exp(pos.numpy() / tau).sum(axis=1)
    expected = p / (p + (k // ngroup) * math.exp(n / tau))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


def test_grouped_equals_mean_over_groups():
    pos, neg = sims(6, 15, 6), sims(6, 103, 7)
    idx = neglabel_group_indices(103, 10, seed=42)
    per_group = np.stack([score_direct(pos, neg[:, g], 0.01)
                          for g in idx.tolist()], axis=1)
    out = neglabel_score(pos, neg, ngroup=10, seed=42)
    np.testing.assert_allclose(out.numpy(), per_group.mean(axis=1), rtol=1e-5)
    # Grouping changes the score (groups are 10x smaller than the full set).
    assert not np.allclose(out.numpy(), score_direct(pos, neg, 0.01))


def test_group_indices_shape_and_determinism():
    a = neglabel_group_indices(103, 10, seed=42)
    assert a.shape == (10, 10) and a.dtype == torch.long
    assert torch.equal(a, neglabel_group_indices(103, 10, seed=42))
    assert not torch.equal(a, neglabel_group_indices(103, 10, seed=43))
    flat = a.flatten().tolist()
    assert len(set(flat)) == 100 and set(flat) <= set(range(103))
    # A shuffle, not the identity order.
    assert flat != sorted(flat)


def test_group_indices_contract():
    # Pinned so that reported numbers stay reproducible, as NegLabel's
    # ScalableClassifier.grouping: the LAST K % ngroup labels of the given
    # order are dropped first, then the remaining K' are permuted by one CPU
    # randperm(K') seeded by `seed` and cut row-wise into groups.
    k, ngroup, seed = 103, 10, 42
    kept = ngroup * (k // ngroup)
    perm = torch.randperm(kept,
                          generator=torch.Generator().manual_seed(seed))
    expected = perm.view(ngroup, k // ngroup)
    assert torch.equal(neglabel_group_indices(k, ngroup, seed), expected)


def test_remainder_labels_are_the_last_ones_dropped_before_the_shuffle():
    k, ngroup, seed = 103, 10, 42
    idx = neglabel_group_indices(k, ngroup, seed)
    dropped = sorted(set(range(k)) - set(idx.flatten().tolist()))
    # the most ID-like adjectives at the end of the mined list, whatever
    # the seed
    assert dropped == [100, 101, 102]
    for other_seed in (0, 1, 7):
        flat = neglabel_group_indices(k, ngroup, other_seed).flatten()
        assert sorted(flat.tolist()) == list(range(100))
    pos, neg = sims(5, 12, 8), sims(5, k, 9)
    base = neglabel_score(pos, neg, ngroup=ngroup, seed=seed)
    neg2 = neg.clone()
    neg2[:, dropped] = 1.0  # would dominate the score if it were used
    torch.testing.assert_close(
        neglabel_score(pos, neg2, ngroup=ngroup, seed=seed), base)
    kept = idx.flatten()[0].item()
    neg3 = neg.clone()
    neg3[:, kept] = 1.0
    assert torch.all(neglabel_score(pos, neg3, ngroup=ngroup, seed=seed)
                     < base)


def published_grouping(pos, neg, perm, ngroup, tau):
    """NegLabel's ScalableClassifier.grouping restated in numpy on cosine
    similarities: drop the last K % ngroup columns, permute the rest by
    ``perm``, reshape to (B, ngroup, -1), then per group the softmax mass
    of the ID columns over [pos, group] / tau, averaged over the groups."""
    pos, neg = pos.double().numpy(), neg.double().numpy()
    drop = neg.shape[1] % ngroup
    if drop:
        neg = neg[:, :-drop]
    groups = neg[:, perm].reshape(pos.shape[0], ngroup, -1)
    scores = []
    for g in range(ngroup):
        full = np.concatenate([pos, groups[:, g]], axis=1) / tau
        full = np.exp(full - full.max(axis=1, keepdims=True))
        full /= full.sum(axis=1, keepdims=True)
        scores.append(full[:, :pos.shape[1]].sum(axis=1))
    return np.mean(scores, axis=0)


@pytest.mark.parametrize('k,ngroup', [(103, 10), (57, 4), (40, 8)])
def test_grouped_score_equals_the_published_grouping(k, ngroup):
    pos, neg = sims(6, 15, 12), sims(6, k, 13)
    idx = neglabel_group_indices(k, ngroup, seed=0)
    perm = idx.flatten().numpy()  # the permutation of the kept K' labels
    out = neglabel_score(pos.double(), neg.double(), ngroup=ngroup, seed=0)
    np.testing.assert_allclose(
        out.numpy(), published_grouping(pos, neg, perm, ngroup, 0.01),
        rtol=1e-12)


def test_precomputed_group_indices():
    pos, neg = sims(4, 9, 10), sims(4, 57, 11)
    idx = neglabel_group_indices(57, 4, seed=1)
    ref = neglabel_score(pos, neg, ngroup=4, seed=1)
    torch.testing.assert_close(neglabel_score(pos, neg, group_indices=idx),
                               ref)
    torch.testing.assert_close(
        neglabel_score(pos, neg, ngroup=4, group_indices=idx), ref)
    with pytest.raises(ValueError, match='ngroup'):
        neglabel_score(pos, neg, ngroup=3, group_indices=idx)
    with pytest.raises(ValueError, match='group_indices'):
        neglabel_score(pos, neg[:, :20], group_indices=idx)


def test_device_group_indices_are_not_read_back_to_the_host():
    # meta tensors have no data: any host read (a device synchronisation on
    # a GPU) would raise; the score must still be computed lazily
    pos, neg = sims(4, 9, 10), sims(4, 57, 11)
    idx = neglabel_group_indices(57, 4, seed=1)
    out = neglabel_score(pos.to('meta'), neg.to('meta'),
                         group_indices=idx.to('meta'))
    assert out.shape == (4, ) and out.device.type == 'meta'
    with pytest.raises(RuntimeError, match='meta'):
        int(idx.to('meta').max())


def test_half_inputs():
    pos, neg = sims(4, 9, 12), sims(4, 40, 13)
    out = neglabel_score(pos.half(), neg.half(), ngroup=4)
    assert out.dtype == torch.float32
    ref = neglabel_score(pos.half().float(), neg.half().float(), ngroup=4)
    torch.testing.assert_close(out, ref)


def test_score_rejects_bad_arguments():
    pos, neg = sims(4, 9, 0), sims(4, 10, 1)
    with pytest.raises(ValueError, match='ngroup'):
        neglabel_score(pos, neg, ngroup=11)
    with pytest.raises(ValueError, match='ngroup'):
        neglabel_score(pos, neg, ngroup=0)
    with pytest.raises(ValueError, match='temperature'):
        neglabel_score(pos, neg, temperature=0.0)
    with pytest.raises(ValueError, match='batch size'):
        neglabel_score(pos, neg[:3])
    with pytest.raises(ValueError, match='neg_sim'):
        neglabel_score(pos, neg[:, :0])
    with pytest.raises(ValueError, match='pos_sim'):
        neglabel_score(pos[0], neg)
    with pytest.raises(ValueError, match='num_neg'):
        neglabel_group_indices(0, 1)


def test_mining_ignores_autocast():
    """Inside an autocast region the affinities stay float32 (quantiles of
    bf16 similarities would reorder close candidates)."""
    g = torch.Generator().manual_seed(7)
    pos = F.normalize(torch.randn(10, 16, generator=g), dim=-1)
    nouns = F.normalize(torch.randn(50, 16, generator=g), dim=-1)
    adjs = F.normalize(torch.randn(30, 16, generator=g), dim=-1)
    expected = mine_negative_labels(pos, nouns, adjs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = mine_negative_labels(pos, nouns, adjs)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
