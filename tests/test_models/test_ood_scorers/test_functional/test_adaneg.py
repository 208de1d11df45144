"""AdaNeg's pure functions against restatements of the published code
(OpenOOD-VLM ttaprompt_postprocessor.py TTAPromptPostprocessor_noadagap,
clip_fixed_ood_prompt.py, clip_for_wordnet_prepare.py) written here: slot
by slot, image by image."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cma_ood.models.ood_scorers.functional.adaneg import (
    adaneg_affinity, adaneg_memory_init, adaneg_memory_update,
    adaneg_negative_counts, adaneg_pools, adaneg_sample_cosines,
    adaneg_sample_proxies, adaneg_select_negatives, adaneg_stream,
    adaneg_stream_order, adaneg_task_proxies, softmax_entropy)
from cma_ood.models.ood_scorers.functional.neglabel import \
    neglabel_group_indices

pytestmark = pytest.mark.usefixtures('single_thread')


# ------------------------------------------------ published restatements
class PublishedMemory:
    """The published feat_memory / indice_memory / entropy_memory: slot 0
    the prompt, write index from 1, full at index memleng (or memleng + 1
    for the intended rule); a full slot replaces the last entry of an
    ascending sort (NaN last; ties: the highest slot) if some entry's
    entropy is higher than the new one."""

    def __init__(self, text, memleng, fill_last):
        num, dim = text.shape
        self.feat = torch.cat([text[:, None], torch.zeros(num, memleng, dim)],
                              1)
        self.indice = torch.ones(num)
        self.entropy = torch.zeros(num, memleng + 1)
        self.full = memleng + 1 if fill_last else memleng

    def write(self, c, e, f):
        if self.indice[c] == self.full:
            if (e < self.entropy[c]).sum() == 0:
                return
            order = np.argsort(self.entropy[c].numpy(), kind='stable')
            j = int(order[-1])
        else:
            j = int(self.indice[c])
            self.indice[c] += 1
        self.feat[c, j] = f
        self.entropy[c, j] = e


def published_grouped(logits, num_id, group_num=5):
    """The grouped ID mass of the published postprocess (drop, then one
    randperm after torch.manual_seed(0), then softmax per group)."""
    pos, neg = logits[:, :num_id], logits[:, num_id:]
    drop = neg.shape[1] % group_num
    if drop:
        neg = neg[:, :-drop]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        idx = torch.randperm(neg.shape[1])
    neg = neg[:, idx].reshape(pos.shape[0], group_num, -1)
    out = [torch.cat([pos, neg[:, g]], -1).softmax(-1)[:, :num_id].sum(-1)
           for g in range(group_num)]
    return torch.stack(out, -1).mean(-1)


def published_entropy(logits, half):
    prob = torch.softmax(logits.half() if half else logits, dim=-1)
    return -(prob * torch.log(prob + 1e-8)).sum()


def published_stream(embeds, text, num_id, scale, batch, memleng, fill_last,
                     samada, beta=5, half=True, thres=0.5, gap=0.5, lam=0.1):
    mem = PublishedMemory(text, memleng, fill_last)
    scores = []
    for start in range(0, embeds.shape[0], batch):
        x = embeds[start:start + batch]
        out_v = scale * (x @ text.T)
        s_v = published_grouped(out_v, num_id)
        pred = out_v[:, :num_id].argmax(1)
        for i in range(x.shape[0]):
            if s_v[i] > thres + gap * (1 - thres):
                mem.write(int(pred[i]),
                          published_entropy(out_v[i, :num_id], half), x[i])
        pred = out_v[:, num_id:].argmax(1)
        for i in range(x.shape[0]):
            if s_v[i] < thres - gap * thres:
                mem.write(num_id + int(pred[i]),
                          published_entropy(out_v[i, num_id:], half), x[i])
        if samada:
            sim = torch.exp(-beta * (1 - mem.feat @ x.T))  # (L, S, B)
            prox = (sim.permute(2, 0, 1)[..., None] * mem.feat[None]).sum(2)
            prox = prox / prox.norm(dim=-1, keepdim=True)
            out = scale * (x[:, None] * prox).sum(-1)
        else:
            prox = mem.feat.mean(1)
            out = scale * x @ (prox / prox.norm(dim=-1, keepdim=True)).T
        scores.append(published_grouped(out, num_id) + lam * s_v)
    return torch.cat(scores), mem


def clustered_embeddings(seed=0, num_id=4, num_neg=10, dim=8, n=150):
    """Prompt embeddings and images near them (most near a few labels, so
    slots fill up and get replaced); returns (text, images)."""
    gen = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(num_id + num_neg, dim, generator=gen),
                       dim=-1)
    near = torch.randint(0, 6, (n,), generator=gen)
    near = torch.where(near < 3, near, num_id + near)  # ID 0-2, neg 3-5
    x = text[near] + 0.25 * torch.randn(n, dim, generator=gen)
    return text, F.normalize(x, dim=-1)


# ------------------------------------------------------------- memory
@pytest.mark.parametrize('fill_last', [False, True])
def test_memory_update_equals_the_published_loop(fill_last):
    gen = torch.Generator().manual_seed(0)
    num, dim, memleng = 5, 4, 4
    text = F.normalize(torch.randn(num, dim, generator=gen), dim=-1)
    ref = PublishedMemory(text, memleng, fill_last)
    ours = adaneg_memory_init(text, memleng if fill_last else memleng - 1)
    for step in range(6):  # batches with repeated labels and NaN entropies
        m = 12
        labels = torch.randint(0, 3, (m,), generator=gen)
        ent = torch.rand(m, generator=gen) * 3
        ent[torch.rand(m, generator=gen) < 0.2] = float('nan')
        feats = torch.randn(m, dim, generator=gen)
        for c, e, f in zip(labels, ent, feats):
            ref.write(int(c), e, f)
        before = ours
        ours = adaneg_memory_update(ours, labels, ent, feats)
        assert before.feats is not ours.feats  # not in place by default
    capacity = memleng if fill_last else memleng - 1
    torch.testing.assert_close(ours.feats, ref.feat[:, 1:1 + capacity])
    torch.testing.assert_close(ours.entropy, ref.entropy[:, 1:1 + capacity],
                               equal_nan=True)
    assert ours.count.tolist() == (ref.indice - 1).long().tolist()
    # the published quirk: memleng - 1 entries ever fill, never the last
    if not fill_last:
        assert (ref.feat[:, memleng] == 0).all()
        assert int(ours.count.max()) == memleng - 1
    assert int(ours.count.max()) == capacity  # the busy slots filled up
    # replacements happened, and only ever by a lower (finite) entropy
    assert not torch.equal(
        ours.feats, adaneg_memory_update(
            adaneg_memory_init(text, capacity), labels[:0], ent[:0],
            feats[:0]).feats)


def test_nan_entropy_freezes_full_slots_and_float_does_not():
    """float16 softmax: a probability under 2**-25 is 0 and 0 * log(0 +
    1e-8) is NaN in half precision; NaN never compares lower."""
    logits = torch.tensor([[0.0, 30.0, 1.0], [0.0, 1.0, 2.0]])
    half = softmax_entropy(logits, 'half')
    assert torch.isnan(half[0]) and torch.isfinite(half[1])
    full = softmax_entropy(logits, 'float')
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(full, -(p * torch.log(p + 1e-8)).sum(-1))
    text = torch.eye(2)
    mem = adaneg_memory_init(text, 1)
    mem = adaneg_memory_update(mem, torch.tensor([0, 0]),
                               torch.tensor([float('nan'), 0.1]),
                               torch.ones(2, 2))
    assert mem.count[0] == 1 and torch.isnan(mem.entropy[0, 0])  # frozen
    mem = adaneg_memory_update(mem, torch.tensor([1, 1]),
                               torch.tensor([0.5, 0.1]), torch.eye(2))
    assert mem.entropy[1, 0] == pytest.approx(0.1)  # replaced: lower
    torch.testing.assert_close(mem.feats[1, 0], torch.tensor([0.0, 1.0]))


# ------------------------------------------------------------ proxies
def test_proxies_equal_their_formulas():
    gen = torch.Generator().manual_seed(1)
    num, dim, cap, beta = 3, 5, 4, 5.0
    text = F.normalize(torch.randn(num, dim, generator=gen), dim=-1)
    mem = adaneg_memory_init(text, cap)
    mem = adaneg_memory_update(
        mem, torch.tensor([0, 0, 2, 0]), torch.rand(4, generator=gen),
        F.normalize(torch.randn(4, dim, generator=gen), dim=-1))
    slots = torch.cat([text[:, None], mem.feats], 1)  # empty slots zero
    task = slots.mean(1)
    torch.testing.assert_close(adaneg_task_proxies(mem),
                               task / task.norm(dim=-1, keepdim=True))
    x = F.normalize(torch.randn(6, dim, generator=gen), dim=-1)
    want_prox = torch.empty(6, num, dim)
    for b in range(6):
        for lab in range(num):
            acc = torch.zeros(dim)
            for j in range(cap + 1):
                m = slots[lab, j]
                acc += torch.exp(-beta * (1 - m @ x[b])) * m
            want_prox[b, lab] = acc / acc.norm()
    torch.testing.assert_close(adaneg_sample_proxies(mem, x, beta),
                               want_prox)
    torch.testing.assert_close(adaneg_sample_cosines(mem, x, beta),
                               (want_prox * x[:, None]).sum(-1))


# ------------------------------------------------------------- stream
@pytest.mark.parametrize('samada,fill_last,half', [(False, False, True),
                                                   (True, False, True),
                                                   (False, True, False)])
def test_stream_equals_the_published_postprocess(samada, fill_last, half):
    num_id, scale = 4, 20.0
    text, x = clustered_embeddings()
    want, ref = published_stream(x, text, num_id, scale, batch=16,
                                 memleng=10, fill_last=fill_last,
                                 samada=samada, half=half)
    got = adaneg_stream(x, text, num_id, logit_scale=scale, batch_size=16,
                        memory_length=10, fill_last_slot=fill_last,
                        proxy='sample' if samada else 'task',
                        entropy_precision='half' if half else 'float')
    torch.testing.assert_close(got['score'], want, rtol=1e-5, atol=1e-6)
    assert int((ref.indice - 1).max()) == (10 if fill_last else 9)
    # the published group split: CPU randperm after torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        perm = torch.randperm(10)
    assert torch.equal(neglabel_group_indices(10, 5, 0), perm.view(5, 2))


def test_stream_depends_on_order_and_batches_but_vanilla_does_not():
    text, x = clustered_embeddings(seed=3)
    base = adaneg_stream(x, text, 4, logit_scale=20.0, batch_size=16)
    perm = torch.randperm(x.shape[0],
                          generator=torch.Generator().manual_seed(0))
    shuffled = adaneg_stream(x[perm], text, 4, logit_scale=20.0,
                             batch_size=16)
    torch.testing.assert_close(shuffled['vanilla'], base['vanilla'][perm])
    assert not torch.allclose(shuffled['score'], base['score'][perm])
    other = adaneg_stream(x, text, 4, logit_scale=20.0, batch_size=50)
    assert not torch.allclose(other['score'], base['score'])
    torch.testing.assert_close(base['score'],
                               base['adaptive'] + 0.1 * base['vanilla'])
    # the first batch: the adaptive score reads the batch's own writes
    alone = adaneg_stream(x[:16], text, 4, logit_scale=20.0, batch_size=16)
    torch.testing.assert_close(alone['score'], base['score'][:16])


def test_stream_order_is_seeded_and_subsamples_id():
    order, idx = adaneg_stream_order(5, 20, seed=1)
    assert sorted(order.tolist()) == list(range(25))
    assert idx.tolist() == list(range(20))
    again, _ = adaneg_stream_order(5, 20, seed=1)
    other, _ = adaneg_stream_order(5, 20, seed=2)
    assert torch.equal(order, again) and not torch.equal(order, other)
    order, idx = adaneg_stream_order(5, 20, seed=1, id_ratio=2.0)
    assert idx.numel() == 10 and sorted(order.tolist()) == list(range(15))
    assert torch.equal(idx, idx.sort().values) and int(idx.max()) < 20
    assert adaneg_stream_order(5, 6, seed=1, id_ratio=2.0)[1].numel() == 6


# --------------------------------------------------------- negatives
def test_pools_follow_the_published_deduplication():
    noun_files = [['apple', 'stone', 'tench'], ['stone', 'cloud', 'red']]
    adj_files = [['red', 'quiet'], ['quiet', 'tench', 'blue']]
    nouns, adjs = adaneg_pools(noun_files, adj_files, ['tench', 'goldfish'])
    # published: set unions, ID names removed, adjectives that are nouns
    # removed; ours keep the order of first appearance
    assert nouns == ['apple', 'stone', 'cloud', 'red']
    assert adjs == ['quiet', 'blue']


def test_selection_is_the_published_rule():
    gen = torch.Generator().manual_seed(2)

    def unit(n):
        return F.normalize(torch.randn(n, 6, generator=gen,
                                       dtype=torch.float64), dim=-1)

    pos, nouns, adjs = unit(40), unit(70), unit(30)
    k = int(40 * 0.95)
    torch.testing.assert_close(adaneg_affinity(nouns, pos),
                               (nouns @ pos.T).sort(1).values[:, k])
    adj_idx, noun_idx = adaneg_select_negatives(pos, nouns, adjs,
                                                num_negatives=25)
    n_adj = int(25 * (30 / (30 + 70)))
    assert (len(adj_idx), len(noun_idx)) == (n_adj, 25 - n_adj) == (7, 18)
    for feats, idx, keep in ((adjs, adj_idx, 7), (nouns, noun_idx, 18)):
        value = (feats @ pos.T).sort(1).values[:, k]
        assert idx.tolist() == value.sort(0).indices[:keep].tolist()
    # the published pool sizes (its comments): 13,101 adjectives, 58,723
    n_adj = int(10000 * (13101 / (13101 + 58723)))
    assert adaneg_negative_counts(58723, 13101, 10000) == (n_adj,
                                                           10000 - n_adj)
    with pytest.raises(ValueError, match='exceeds'):
        adaneg_negative_counts(3, 2, 6)
