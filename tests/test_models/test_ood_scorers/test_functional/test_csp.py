"""Tests of CSP's pure functions (conjugated pool, prompt ensembles, the
max-cos exclusion) and of the NegLabel-family extras (seed repeats, top
negatives) in cma_ood.models.ood_scorers.functional."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cma_ood.models.ood_scorers.functional.csp import (
    CSP_PHRASE_TEMPLATES, CSP_SUPERCLASSES, CSP_TEMPLATES, conjugated_phrases,
    ensemble_embeddings, ensemble_prompts)
from cma_ood.models.ood_scorers.functional.neglabel import (
    label_affinity, mine_negative_labels, neglabel_score,
    neglabel_seed_group_indices, neglabel_seed_scores, top_negative_indices)

#: CSP's class_names.py restated: csp_templates, in the published order
PUBLISHED_CSP_TEMPLATES = [
    '{} environment', '{} space', '{} object', '{} scene', '{} place',
    '{} item', '{} area', '{} view', '{} thing', '{} pattern',
    '{} structure', '{} landscape', '{} vista', '{} creature'
]


def normed(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


# ------------------------------------------------------ conjugated pool
def published_draw(adjectives, seed=0):
    """CSP's loader restated: ``random.seed(seed)`` once, then per
    adjective ``random.choice(csp_templates).format(adj)`` (the global
    generator's state is restored afterwards)."""
    state = random.getstate()
    try:
        random.seed(seed)
        return [random.choice(PUBLISHED_CSP_TEMPLATES).format(a)
                for a in adjectives]
    finally:
        random.setstate(state)


def test_the_published_lists():
    assert [f'{{}} {w}' for w in CSP_SUPERCLASSES] == PUBLISHED_CSP_TEMPLATES
    assert len(CSP_TEMPLATES) == 8 and len(CSP_PHRASE_TEMPLATES) == 4
    assert CSP_TEMPLATES[0] == 'a close-up photo of the nice {}.'
    assert CSP_TEMPLATES[-1] == 'the nice {}'
    assert CSP_PHRASE_TEMPLATES[1] == 'a nice photo of {}'


@pytest.mark.parametrize('seed', [0, 7])
def test_conjugated_phrases_follow_the_seeded_draw_order(seed):
    adjs = [f'adj{i}' for i in range(300)]
    phrases = conjugated_phrases(adjs, seed=seed)
    assert phrases == published_draw(adjs, seed)
    # every superclass gets drawn, one per adjective, in reading order
    assert {p.split(' ', 1)[1] for p in phrases} == set(CSP_SUPERCLASSES)
    assert [p.split(' ', 1)[0] for p in phrases] == adjs
    # the i-th draw depends on the position only: a prefix draws the same
    assert conjugated_phrases(adjs[:50], seed=seed) == phrases[:50]
    # reordering the adjectives changes which word each one gets
    assert conjugated_phrases(adjs[::-1], seed=seed) != phrases[::-1]
    assert conjugated_phrases(adjs, seed=seed + 1) != phrases


def test_conjugated_phrases_do_not_touch_the_global_generator():
    random.seed(123)
    before = random.random()
    random.seed(123)
    conjugated_phrases(['red', 'blue'])
    assert random.random() == before


def test_conjugated_phrases_bad_arguments():
    with pytest.raises(ValueError, match='superclasses'):
        conjugated_phrases(['red'], superclasses=[])
    with pytest.raises(ValueError, match='seed'):
        conjugated_phrases(['red'], seed=1.5)


# ------------------------------------------------------------ ensembles
def fake_text_encoder(prompts, dim=6):
    """Raw 'text embeddings' of very different norms: a fixed random
    direction per prompt, scaled by 1 + len(prompt)."""
    out = []
    for p in prompts:
        g = torch.Generator().manual_seed(sum(map(ord, p)) * 31 + len(p))
        out.append(torch.randn(dim, generator=g, dtype=torch.float64) *
                   (1 + len(p)))
    return torch.stack(out)


def test_ensemble_prompts_are_label_major():
    assert ensemble_prompts(['cat', 'dog'], ['a {}', 'the {}.']) == [
        'a cat', 'the cat.', 'a dog', 'the dog.']
    with pytest.raises(ValueError, match='templates'):
        ensemble_prompts(['cat'], [])


def test_ensemble_averages_unnormalised_embeddings():
    labels = ['cat', 'a long label', 'x']
    prompts = ensemble_prompts(labels, CSP_TEMPLATES)
    raw = fake_text_encoder(prompts)
    got = ensemble_embeddings(raw, len(CSP_TEMPLATES))
    assert got.shape == (3, 6) and got.dtype == torch.float64
    for i, label in enumerate(labels):
        vecs = [fake_text_encoder([t.format(label)])[0]
                for t in CSP_TEMPLATES]
        mean = sum(vecs) / len(vecs)
        torch.testing.assert_close(got[i], mean / mean.norm(), rtol=0,
                                   atol=1e-12)
        # CLIP's normalise-first recipe is a different vector here
        first = sum(v / v.norm() for v in vecs)
        assert (got[i] - first / first.norm()).abs().max() > 1e-3
    # per-label counts (labels with ensembles of different sizes)
    counts = [len(CSP_TEMPLATES), 1, len(CSP_PHRASE_TEMPLATES)]
    prompts = (ensemble_prompts(labels[:1], CSP_TEMPLATES) + ['x'] +
               ensemble_prompts(['red thing'], CSP_PHRASE_TEMPLATES))
    raw = fake_text_encoder(prompts)
    mixed = ensemble_embeddings(raw, counts)
    torch.testing.assert_close(mixed[0], got[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(mixed[1], F.normalize(raw[8], dim=0))
    tail = raw[9:].mean(dim=0)
    torch.testing.assert_close(mixed[2], tail / tail.norm())
    assert ensemble_embeddings(raw.float(), counts).dtype == torch.float32


def test_ensemble_bad_counts():
    raw = torch.randn(6, 3)
    with pytest.raises(ValueError, match='counts=4'):
        ensemble_embeddings(raw, 4)
    with pytest.raises(ValueError, match='sum to 5'):
        ensemble_embeddings(raw, [2, 3])
    with pytest.raises(ValueError, match='positive'):
        ensemble_embeddings(raw, [6, 0])


# ---------------------------------------------------- max-cos exclusion
def affinity_published(cand, pos, q, threshold):
    """CSP's rule restated in numpy: quantile, then 1.0 where max > t."""
    sim = cand.numpy() @ pos.numpy().T
    aff = np.quantile(sim, q, axis=1)
    aff[sim.max(axis=1) > threshold] = 1.0
    return aff


def test_max_cos_exclusion():
    pos = normed(12, 8, 0)
    cand = normed(200, 8, 1)
    # a candidate made a near-copy of an ID label; the threshold excludes
    # about 30% of the others (strictly greater is excluded, see below)
    cand[5] = F.normalize(pos[3] + 0.05 * cand[5], dim=0)
    sim = cand @ pos.T
    threshold = float(torch.quantile(sim.max(dim=1).values, 0.7))
    got = label_affinity(cand, pos, 0.95, chunk_size=17, max_cos=threshold)
    ref = affinity_published(cand, pos, 0.95, threshold)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    excluded = sim.max(dim=1).values > threshold
    assert got[5] == 1.0 and (got == 1.0).sum() == excluded.sum() > 40
    at = int(sim.max(dim=1).values.argsort()[100])
    edge = float(sim[at].max())
    assert label_affinity(cand, pos, 0.95, max_cos=edge)[at] != 1.0
    # off by default: NegLabel's quantile
    plain = label_affinity(cand, pos, 0.95)
    np.testing.assert_allclose(plain.numpy(),
                               np.quantile(sim.numpy(), 0.95, axis=1),
                               rtol=0, atol=1e-12)


def test_mining_with_exclusion_keeps_the_lowest_of_each_pool():
    pos, nouns, adjs = normed(10, 8, 2), normed(120, 8, 3), normed(60, 8, 4)
    t = 0.6
    noun_idx, adj_idx = mine_negative_labels(pos, nouns, adjs, 0.95, 0.5,
                                             max_cos=t)
    for feats, idx in ((nouns, noun_idx), (adjs, adj_idx)):
        aff = affinity_published(feats, pos, 0.95, t)
        order = sorted(range(len(aff)), key=lambda i: (aff[i], i))
        assert idx.tolist() == order[:len(aff) // 2]
        assert (aff == 1.0).sum() > 0  # the exclusion took effect


# ---------------------------------------------------------- seed repeats
def grouped_reference(pos, neg, seed, ngroup, tau=0.01):
    """The grouped score of one seed, restated: drop the last K % ngroup
    columns, permute by ``torch.randperm(K')`` of a CPU generator seeded
    ``seed``, cut into ngroup groups, mean of the per-group softmax mass
    of the ID columns (float64)."""
    k = neg.shape[1] // ngroup * ngroup
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(k, generator=gen).numpy()
    p, n = pos.double().numpy() / tau, neg.double().numpy()[:, :k] / tau
    groups = n[:, perm].reshape(len(p), ngroup, -1)
    out = []
    for g in range(ngroup):
        full = np.concatenate([p, groups[:, g]], axis=1)
        full = np.exp(full - full.max(axis=1, keepdims=True))
        out.append(full[:, :p.shape[1]].sum(1) / full.sum(1))
    return np.mean(out, axis=0)


@pytest.mark.parametrize('max_elements', [2**26, 1000])
def test_seed_scores_equal_each_seeds_grouped_score(max_elements):
    g = torch.Generator().manual_seed(0)
    pos = (torch.rand(7, 9, generator=g) - 0.5) * 0.4
    neg = (torch.rand(7, 103, generator=g) - 0.5) * 0.4
    seeds = [1, 2, 5, 11]
    idx = neglabel_seed_group_indices(103, 10, seeds)
    assert idx.shape == (4, 10, 10)
    out = neglabel_seed_scores(pos.double(), neg.double(), idx, 0.01,
                               max_elements=max_elements)
    assert out.shape == (4, 7) and out.dtype == torch.float64
    for row, seed in zip(out, seeds):
        np.testing.assert_allclose(row.numpy(),
                                   grouped_reference(pos, neg, seed, 10),
                                   rtol=1e-12)
    # the seeds' scores differ (the split matters), and equal
    # neglabel_score with each split
    assert (out[0] - out[1]).abs().max() > 1e-6
    torch.testing.assert_close(
        neglabel_seed_scores(pos, neg, idx, 0.01)[2],
        neglabel_score(pos, neg, 0.01, ngroup=10, seed=5))


def test_seed_scores_bad_arguments():
    pos, neg = torch.rand(3, 4), torch.rand(3, 20)
    idx = neglabel_seed_group_indices(20, 4, [1, 2])
    with pytest.raises(ValueError, match='3-D'):
        neglabel_seed_scores(pos, neg, idx[0])
    with pytest.raises(ValueError, match='lie in'):
        neglabel_seed_scores(pos, neg[:, :10], idx)
    with pytest.raises(ValueError, match='batch size'):
        neglabel_seed_scores(pos[:2], neg, idx)
    with pytest.raises(ValueError, match='seeds'):
        neglabel_seed_group_indices(20, 4, [])


# --------------------------------------------------------- top negatives
def test_top_negative_indices_equal_a_full_argsort():
    g = torch.Generator().manual_seed(3)
    neg = torch.rand(6, 40, generator=g)
    got = top_negative_indices(neg, 5)
    ref = np.argsort(-neg.numpy(), axis=1, kind='stable')[:, :5]
    assert got.dtype == torch.long and got.tolist() == ref.tolist()
    assert top_negative_indices(neg, 100).shape == (6, 40)  # at most K
    assert top_negative_indices(neg, 0).shape == (6, 0)
    with pytest.raises(ValueError, match='k must'):
        top_negative_indices(neg, -1)
