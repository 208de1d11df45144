"""Tests of CSPScorer (against a restatement of CSP's published loader,
ensembles, mining and score on a tiny model), of the seed repeats and top
negatives of the NegLabel family, and of the CSP configs."""
import itertools
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets import neglabel_candidates as cands
from cma_ood.models import MultiModalClassifier
from cma_ood.models.multimodal.clip_builder import tokenize
from cma_ood.models.ood_scorers import CSPScorer, NegLabelScorer
from cma_ood.models.ood_scorers.csp import CSP_LEXNAMES

import _helpers  # noqa: E402  (tests/ is on sys.path)

REPO = Path(_helpers.REPO)
CLASSNAMES = ['cat', 'dog', 'car', 'tree', 'house', 'boat']
SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'to', 'vi', 'be', 'du']
#: CSP's class_names.py and custom_config/clip-ViT-B16.py, restated
PUBLISHED_NOUN_TEMPLATES = [
    'a close-up photo of the nice {}.', 'a photo with the nice {}.',
    'a good photo with the nice {}.', 'a photo of the nice {}.', '{}',
    'the {}', 'the good {}', 'the nice {}'
]
PUBLISHED_CSP_TEMPLATES = [
    '{} environment', '{} space', '{} object', '{} scene', '{} place',
    '{} item', '{} area', '{} view', '{} thing', '{} pattern',
    '{} structure', '{} landscape', '{} vista', '{} creature'
]
PUBLISHED_ADJ_TEMPLATES = [
    '{}', 'a nice photo of {}', 'a good photo of {}',
    'a close-up photo of {}'
]
PUBLISHED_EXCLUDE = ('noun.person.txt', 'noun.quantity.txt',
                     'noun.group.txt', 'adj.pert.txt')

pytestmark = pytest.mark.usefixtures('single_thread')


def words(start, n):
    out = []
    for i in range(start, start + n):
        a, b = divmod(i, len(SYLLABLES))
        out.append(SYLLABLES[a % len(SYLLABLES)] + SYLLABLES[b])
    return out


@pytest.fixture
def txt_dir(tmp_path):
    """Two noun files and one adjective file CSP reads, and the four files
    it leaves out; the adjectives share words with the nouns (read first,
    sorted order, so they stay adjectives)."""
    root = tmp_path / 'txtfiles'
    root.mkdir()
    (root / 'noun.act.txt').write_text('\n'.join(words(0, 30)) + '\n')
    (root / 'noun.artifact.txt').write_text('\n'.join(words(30, 30)) + '\n')
    (root / 'noun.person.txt').write_text('\n'.join(words(60, 10)) + '\n')
    (root / 'noun.group.txt').write_text('\n'.join(words(75, 4)) + '\n')
    (root / 'noun.quantity.txt').write_text(words(80, 1)[0] + '\n')
    (root / 'adj.all.txt').write_text('\n'.join(words(20, 20)) + '\n')
    (root / 'adj.pert.txt').write_text('\n'.join(words(70, 5)) + '\n')
    return root


LEXNAMES = ('noun.act', 'noun.artifact', 'adj.all')


def make_classifier(scorers=(), seed=0):
    torch.manual_seed(seed)
    clf = MultiModalClassifier(
        arch='tiny-vit-32px', pretrained=None, classnames=CLASSNAMES,
        ood_scorers=list(scorers))
    return clf.eval()


def csp_cfg(txt_dir, cache_dir=False, **kw):
    cfg = dict(type='CSPScorer', txt_dir=str(txt_dir), lexnames=LEXNAMES,
               ngroup=2, batch_size=64, show_progress=False,
               cache_dir=cache_dir if cache_dir is False else str(cache_dir))
    cfg.update(kw)
    return cfg


def count_encodes(monkeypatch, clf):
    calls = []
    original = clf.encode_prompts

    def spy(tokens, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, **kwargs)

    monkeypatch.setattr(clf, 'encode_prompts', spy)
    return calls


def published_csp(clf, txt_dir, max_cos, ratio=0.15, q=0.95):
    """CSP's CLIPScalableClassifier.__init__ restated on our text tower:
    every file of the directory but the excluded ones (in sorted listing
    order), one seen-dict across them, ``random.seed(0)`` then one
    ``random.choice`` per adjective, the 8 / 4 template prompts, raw
    embeddings averaged per label (the ID ones template-major, as
    itertools.product lays them out) then normalised, quantile affinity
    with ``sim[max > max_cos] = 1.0``, argsort, the first int(len * ratio)
    of each pool, nouns then phrases."""
    files = sorted(os.listdir(txt_dir))
    for name in PUBLISHED_EXCLUDE:
        files.remove(name)
    nouns, phrases, words_noun, words_adj, dedup = [], [], [], [], {}
    state = random.getstate()
    random.seed(0)
    try:
        for name in files:
            kind = name.split('.')[0]
            for line in open(os.path.join(txt_dir, name)).readlines():
                line = line.replace('_', ' ')
                if line.strip() in dedup:
                    continue
                dedup[line.strip()] = None
                if kind == 'noun':
                    nouns.append(line.strip())
                    words_noun += [t.format(line.strip())
                                   for t in PUBLISHED_NOUN_TEMPLATES]
                else:
                    cand = random.choice(PUBLISHED_CSP_TEMPLATES).format(
                        line.strip())
                    phrases.append(cand)
                    words_adj += [t.format(cand)
                                  for t in PUBLISHED_ADJ_TEMPLATES]
    finally:
        random.setstate(state)

    def raw(prompts):
        with torch.no_grad():
            return clf.clip.encode_text(
                tokenize(prompts, clf.context_length)).double()

    id_prompts = [t.format(c) for t, c in itertools.product(
        PUBLISHED_NOUN_TEMPLATES, CLASSNAMES)]
    pos = raw(id_prompts).view(-1, len(CLASSNAMES), 64).mean(dim=0)
    pos = pos / pos.norm(dim=-1, keepdim=True)
    neg = torch.cat([raw(words_noun).view(-1, 8, 64).mean(dim=1),
                     raw(words_adj).view(-1, 4, 64).mean(dim=1)])
    neg = neg / neg.norm(dim=-1, keepdim=True)
    sim = neg @ pos.T
    aff = torch.quantile(sim, q=q, dim=-1)
    aff[sim.max(dim=1).values > max_cos] = 1.0
    n = len(nouns)
    ind_noun = torch.argsort(aff[:n])[:int(n * ratio)]
    ind_adj = torch.argsort(aff[n:])[:int(len(phrases) * ratio)]
    labels = [nouns[i] for i in ind_noun] + [phrases[i] for i in ind_adj]
    return dict(labels=labels, pos=pos,
                neg=torch.cat([neg[:n][ind_noun], neg[n:][ind_adj]]),
                num=(n, len(phrases)), aff=aff, sim=sim)


def grouped_reference(pos, neg, seed, ngroup, tau=0.01):
    """Grouped NegLabel score of one seed (float64): drop the last
    K % ngroup, permute by a CPU randperm seeded ``seed``, cut, mean of
    the per-group softmax mass of the ID columns."""
    k = neg.shape[1] // ngroup * ngroup
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    p, n = pos.double() / tau, neg.double()[:, :k][:, perm] / tau
    groups = n.reshape(len(p), ngroup, -1)
    lse_p = torch.logsumexp(p, dim=1, keepdim=True)
    lse_n = torch.logsumexp(groups, dim=2)
    return torch.exp(lse_p - torch.logaddexp(lse_p, lse_n)).mean(dim=1)


def median_max_cos(clf, txt_dir):
    """A max-cos threshold that excludes about half of the tiny model's
    candidates (its random text tower puts everything close together)."""
    ref = published_csp(clf, txt_dir, max_cos=2.0)
    return float(ref['sim'].max(dim=1).values.median())


# ------------------------------------------------------------ end to end
def test_csp_equals_the_published_rule_end_to_end(txt_dir):
    clf = make_classifier()
    t = median_max_cos(clf, txt_dir)
    clf = make_classifier(scorers=[csp_cfg(txt_dir, max_cos=t,
                                           seed_repeats=2)])
    images = torch.randn(5, 3, 32, 32)
    samples = clf.predict(images)
    scorer = clf.ood_scorers[0]
    ref = published_csp(clf, txt_dir, max_cos=t)
    assert ref['num'] == (40, 20)  # 4 files left out, 20 nouns read first
    # as adjectives
    excluded = ref['sim'].max(dim=1).values > t
    assert 15 < int(excluded.sum()) < 45  # the exclusion took effect
    # the kept list: nouns, then conjugated phrases, by ascending affinity
    assert scorer.neg_labels == ref['labels']
    assert len(scorer.neg_labels) == int(40 * 0.15) + int(20 * 0.15)
    assert scorer.neg_kinds == ['n'] * 6 + ['a'] * 3
    torch.testing.assert_close(scorer.neg_embeds.double(), ref['neg'],
                               rtol=0, atol=2e-6)
    torch.testing.assert_close(scorer.id_embeds.double(), ref['pos'],
                               rtol=0, atol=2e-6)
    # the score uses the ensemble ID embeddings, not the classifier's
    emb = F.normalize(clf.encode_image(images).float(), dim=-1).double()
    pos_sim, neg_sim = emb @ ref['pos'].T, emb @ ref['neg'].T
    got = {k: torch.tensor([s.ood_scores[k] for s in samples],
                           dtype=torch.float64)
           for k in ('CSP', 'CSP@seed=1', 'CSP@seed=2')}
    assert list(samples[0].ood_scores) == ['CSP', 'CSP@seed=1',
                                           'CSP@seed=2']
    for key, seed in (('CSP', 0), ('CSP@seed=1', 1), ('CSP@seed=2', 2)):
        torch.testing.assert_close(
            got[key], grouped_reference(pos_sim, neg_sim, seed, 2),
            rtol=1e-4, atol=1e-7)
    classifier_pos = emb @ clf.class_embeddings().double().T
    assert (got['CSP'] - grouped_reference(classifier_pos, neg_sim, 0, 2)
            ).abs().max() > 1e-4
    # top negatives: the 5 most similar kept labels, most similar first
    order = torch.argsort(neg_sim, dim=1, descending=True)[:, :5]
    for s, row in zip(samples, order.tolist()):
        assert s.ood_details['CSP']['top_negatives'] == [
            ref['labels'][j] for j in row]


def test_the_ensemble_is_the_mean_of_raw_embeddings(txt_dir):
    """encode_labels through the classifier's context: raw embeddings of
    each label's prompts averaged, then normalised (normalising each prompt
    first gives other vectors on this model)."""
    clf = make_classifier()
    scorer = CSPScorer(txt_dir=str(txt_dir), lexnames=LEXNAMES,
                       cache_dir=False)
    labels, kinds = ['kalo', 'mine vista'], ['n', 'a']
    got = scorer.encode_labels(clf.scorer_context(), labels, kinds)
    for i, (label, templates) in enumerate(
            ((labels[0], PUBLISHED_NOUN_TEMPLATES),
             (labels[1], PUBLISHED_ADJ_TEMPLATES))):
        with torch.no_grad():
            raw = clf.clip.encode_text(tokenize(
                [t.format(label) for t in templates], 24)).double()
        mean = raw.mean(dim=0)
        torch.testing.assert_close(got[i].double(), mean / mean.norm(),
                                   rtol=0, atol=2e-6)
        first = F.normalize(raw, dim=-1).mean(dim=0)
        assert (got[i].double() - first / first.norm()).abs().max() > 1e-5


def test_cache_hit_and_a_key_apart_from_neglabel(txt_dir, tmp_path,
                                                 monkeypatch):
    cache = tmp_path / 'cache'
    clf = make_classifier(scorers=[
        csp_cfg(txt_dir, cache), dict(type='NegLabelScorer',
                                      txt_dir=str(txt_dir),
                                      lexnames=LEXNAMES, ngroup=2,
                                      cache_dir=str(cache))])
    clf.prepare_scorers()
    csp, neglabel = clf.ood_scorers
    assert csp.cache_file.name.startswith('csp_')
    assert neglabel.cache_file.name.startswith('neglabel_')
    nouns, adjs = csp.read_candidates()
    ctx = clf.scorer_context()
    assert csp.cache_key(ctx, nouns, adjs) != neglabel.cache_key(
        ctx, nouns, adjs)
    # the published settings are in the key
    keys = {CSPScorer(lexnames=LEXNAMES, **kw).cache_key(ctx, nouns, adjs)
            for kw in (dict(), dict(draw_seed=1), dict(max_cos=0.9),
                       dict(id_templates=None),
                       dict(phrase_templates=['{}']),
                       dict(superclasses=['thing']))}
    assert len(keys) == 6
    # group settings and the options of scoring are not
    assert CSPScorer(lexnames=LEXNAMES, ngroup=3, seed=4, seed_repeats=2,
                     top_negatives=0).cache_key(ctx, nouns, adjs) == \
        CSPScorer(lexnames=LEXNAMES).cache_key(ctx, nouns, adjs)

    clf2 = make_classifier(scorers=[csp_cfg(txt_dir, cache)], seed=1)
    clf2.load_state_dict(clf.state_dict())
    calls = count_encodes(monkeypatch, clf2)
    clf2.prepare_scorers()
    again = clf2.ood_scorers[0]
    assert calls == []  # neither candidates nor ID ensembles encoded
    assert again.neg_labels == csp.neg_labels
    assert torch.equal(again.neg_embeds, csp.neg_embeds)
    assert torch.equal(again.id_embeds, csp.id_embeds)


def test_dump_and_reload_phrases(txt_dir, tmp_path):
    dump = tmp_path / 'csp.txt'
    clf = make_classifier(scorers=[csp_cfg(txt_dir, dump_labels=str(dump))])
    images = torch.randn(4, 3, 32, 32)
    first = [s.ood_scores['CSP'] for s in clf.predict(images)]
    scorer = clf.ood_scorers[0]
    assert any(' ' in w for w in scorer.neg_labels[-3:])  # the phrases
    clf2 = make_classifier(scorers=[csp_cfg(tmp_path / 'none',
                                            neg_labels_file=str(dump))])
    clf2.load_state_dict(clf.state_dict())
    second = [s.ood_scores['CSP'] for s in clf2.predict(images)]
    reloaded = clf2.ood_scorers[0]
    assert reloaded.neg_labels == scorer.neg_labels
    torch.testing.assert_close(reloaded.neg_embeds, scorer.neg_embeds,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(reloaded.id_embeds, scorer.id_embeds,
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(second, first, rtol=1e-4)


# ------------------------------------------- NegLabel: repeats, top-k
def test_neglabel_seed_repeats_and_top_negatives(txt_dir):
    clf = make_classifier(scorers=[
        dict(type='NegLabelScorer', txt_dir=str(txt_dir), lexnames=LEXNAMES,
             ngroup=3, seeds=[4, 9], top_negatives=3, cache_dir=False),
        dict(type='NegLabelScorer', txt_dir=str(txt_dir), lexnames=LEXNAMES,
             ngroup=3, top_negatives=0, name='plain', cache_dir=False)])
    clf.prepare_scorers()
    scorer = clf.ood_scorers[0]
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(6, 64, generator=g), dim=-1)
    cos = emb @ clf.class_embeddings().T
    out = scorer(emb, cos, torch.tensor(100.0))
    neg_sim = emb @ scorer.neg_embeds.T
    torch.testing.assert_close(out.score.double(),
                               grouped_reference(cos, neg_sim, 0, 3),
                               rtol=1e-5, atol=1e-8)
    assert list(out.variants) == ['@seed=4', '@seed=9']
    for seed in (4, 9):
        torch.testing.assert_close(
            out.variants[f'@seed={seed}'].double(),
            grouped_reference(cos, neg_sim, seed, 3), rtol=1e-5, atol=1e-8)
    order = np.argsort(-neg_sim.numpy(), axis=1)[:, :3]
    assert out.per_image['top_negatives'] == [
        [scorer.neg_labels[j] for j in row] for row in order]
    # off: the plain score tensor, as before
    plain = clf.ood_scorers[1](emb, cos, torch.tensor(100.0))
    assert torch.is_tensor(plain)
    torch.testing.assert_close(plain, out.score)


def test_repeat_seed_options():
    assert NegLabelScorer(seed_repeats=3).repeat_seeds == [1, 2, 3]
    assert NegLabelScorer(seed=2, seed_repeats=3).repeat_seeds == [0, 1, 3]
    assert NegLabelScorer(seeds=[7, 5]).repeat_seeds == [7, 5]
    assert CSPScorer().repeat_seeds == [] and CSPScorer().top_negatives == 5
    for kw, match in ((dict(seeds=[0, 1]), 'main seed'),
                      (dict(seeds=[1, 1]), 'repeat'),
                      (dict(seeds=[1], seed_repeats=2), 'disagrees'),
                      (dict(seed_repeats=-1), 'seed_repeats'),
                      (dict(seed_repeats=2, ngroup=1), 'ngroup > 1'),
                      (dict(top_negatives=-1), 'top_negatives')):
        with pytest.raises(ValueError, match=match):
            NegLabelScorer(**kw)


@pytest.mark.parametrize('kw,error', [
    (dict(noun_template='a {}'), TypeError),
    (dict(noun_templates=[]), ValueError),
    (dict(phrase_templates=['no placeholder']), ValueError),
    (dict(superclasses=[]), ValueError),
    (dict(max_cos=1.5), ValueError),
    (dict(draw_seed='0'), ValueError),
])
def test_csp_bad_arguments(kw, error):
    with pytest.raises(error):
        CSPScorer(**kw)


# ------------------------------------------------- the shipped txtfiles
def test_pool_sizes_of_the_shipped_txtfiles():
    """CSP's 23 files of our txtfiles/, read as its loader reads them
    (restated: one seen-set, sorted order, excluded files removed): the
    pools are within 0.5% of the published 46,560 nouns and 10,060
    adjectives (of the published txtfiles; ours are a rebuild, see
    txtfiles/README.md), and the phrases are the seeded draw's."""
    txt = cands.default_txt_dir()
    assert set(CSP_LEXNAMES) == {
        p[:-4] for p in os.listdir(txt) if p.endswith('.txt')
    } - {name[:-4] for name in PUBLISHED_EXCLUDE}
    seen, pools = set(), {'noun': [], 'adj': []}
    for name in sorted(f'{lex}.txt' for lex in CSP_LEXNAMES):
        for line in (txt / name).read_text().splitlines():
            if line.strip() not in seen:
                seen.add(line.strip())
                pools[name.split('.')[0]].append(line.strip())
    nouns, adjs = CSPScorer().read_candidates()
    assert (nouns, adjs) == (pools['noun'], pools['adj'])
    # our rebuilt adj.all is 0.23% short of the published one
    assert abs(len(nouns) - 46560) / 46560 < 5e-3
    assert abs(len(adjs) - 10060) / 10060 < 5e-3
    # the negatives: 15% of each pool (published: 6,984 + 1,509)
    assert abs(int(len(nouns) * 0.15) - 6984) / 6984 < 5e-3
    assert abs(int(len(adjs) * 0.15) - 1509) / 1509 < 5e-3
    phrases = CSPScorer().candidate_pools(nouns, adjs)[1]
    state = random.getstate()
    random.seed(0)
    assert phrases == [random.choice(PUBLISHED_CSP_TEMPLATES).format(a)
                       for a in adjs]
    random.setstate(state)


# -------------------------------------------------------------- configs
def test_csp_configs():
    from mmpretrain.registry import MODELS
    for path, interpolation in (
            ('configs/csp/csp_clip-vit-b16_1xb256_in1k-mos.py', 'bilinear'),
            ('configs/cma/cma-csp_clip-vit-b16_4xb128_in1k-mos.py',
             'bicubic')):
        cfg = Config.fromfile(str(REPO / path))
        assert [s.type for s in cfg.model.ood_scorers] == [
            'CSPScorer', 'NegLabelScorer', 'MCMScorer']
        assert cfg.model.arch == 'ViT-B/16'
        assert cfg.model.classnames == 'imagenet'
        assert cfg.test_evaluator == dict(type='OoDMetric')
        assert cfg.test_dataloader.dataset.pipeline[1].interpolation == \
            interpolation
        scorer = MODELS.build(cfg.model.ood_scorers[0])
        assert (scorer.percentile, scorer.ratio, scorer.temperature,
                scorer.ngroup, scorer.seed, scorer.max_cos,
                scorer.draw_seed) == (0.95, 0.15, 0.01, 100, 0, 0.95, 0)
        assert list(scorer.noun_templates) == PUBLISHED_NOUN_TEMPLATES
        assert list(scorer.id_templates) == PUBLISHED_NOUN_TEMPLATES
        assert list(scorer.phrase_templates) == PUBLISHED_ADJ_TEMPLATES
        assert [f'{{}} {w}' for w in scorer.superclasses] == \
            PUBLISHED_CSP_TEMPLATES
        assert sorted(f'{n}.txt' for n in scorer.lexnames) == sorted(
            f'{n}.txt' for n in NegLabelScorer().lexnames
            if f'{n}.txt' not in PUBLISHED_EXCLUDE)
        if 'cma/' in path:
            assert cfg.model.loss == dict(type='CMALoss', lam=0.001)
    demo = Config.fromfile(str(
        REPO / 'configs/demo/zero-shot-scores_clip-tiny-rn_1xb256_shapes.py'))
    assert [s.type for s in demo.model.ood_scorers] == [
        'MCMScorer', 'NegLabelScorer', 'CSPScorer', 'AdaNegScorer',
        'GLMCMScorer']
