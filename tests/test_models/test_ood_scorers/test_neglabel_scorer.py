"""Tests of NegLabelScorer (mining through the classifier, cache, label
files) and of the NegLabel/MCM configs' models."""
import os
import os.path as osp
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets.wordnet import DEFAULT_LEXNAMES
from cma_ood.models import MultiModalClassifier, NegLabelScorer
from cma_ood.datasets import neglabel_candidates as cands
from cma_ood.models.ood_scorers import neglabel as nls
from cma_ood.models.multimodal.clip_builder import tokenize
from cma_ood.models.ood_scorers.functional.neglabel import mine_negative_labels, neglabel_score

import _helpers  # noqa: E402  (tests/ is on sys.path)

REPO = Path(_helpers.REPO)
CLASSNAMES = ['cat', 'dog', 'car', 'tree', 'house', 'boat']
LEXNAMES = ('noun.act', 'noun.artifact', 'noun.Tops', 'adj.all')
SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'to', 'vi', 'be', 'du']


pytestmark = pytest.mark.usefixtures('single_thread')


def words(start, n):
    """``n`` distinct short pseudo-words (two syllables each)."""
    out = []
    for i in range(start, start + n):
        a, b = divmod(i, len(SYLLABLES))
        out.append(SYLLABLES[a % len(SYLLABLES)] + SYLLABLES[b])
    return out


@pytest.fixture
def txt_dir(tmp_path):
    """3 noun files and 1 adjective file of ~40 words, with a blank line,
    surrounding spaces and duplicates across the noun files."""
    root = tmp_path / 'txtfiles'
    root.mkdir()
    act, artifact, tops, adj = words(0, 40), words(40, 40), words(80, 19), \
        words(0, 40)  # the adjectives reuse the first noun words
    (root / 'noun.act.txt').write_text('\n'.join(act[:20] + [''] + act[20:]) +
                                       '\n')
    (root / 'noun.artifact.txt').write_text(
        '\n'.join(f'  {w} ' for w in artifact) + '\n' + act[3] + '\n')
    (root / 'noun.Tops.txt').write_text('\n'.join(tops + [artifact[0]]))
    (root / 'adj.all.txt').write_text('\n'.join(adj) + '\n\n')
    # read in sorted file order (adj.all, noun.Tops, noun.act,
    # noun.artifact) with one seen-set: the adjectives keep the words they
    # share with noun.act, noun.Tops keeps artifact[0]
    return dict(dir=root, nouns=tops + artifact, adjs=adj)


def published_loader(txt_dir):
    """NegLabel's CLIPScalableClassifier loader restated: every
    ``noun.*`` / ``adj.*`` file of the directory in (here: sorted) listing
    order, one dict of seen stripped lines across all files."""
    nouns, adjs, seen = [], [], {}
    for name in sorted(os.listdir(txt_dir)):
        kind = name.split('.')[0]
        if kind not in ('noun', 'adj'):
            continue
        with open(os.path.join(txt_dir, name)) as f:
            for line in f.readlines():
                word = line.strip()
                if word in seen:
                    continue
                seen[word] = None
                (nouns if kind == 'noun' else adjs).append(word)
    return nouns, adjs


def make_classifier(txt_dir, cache_dir, seed=0, classnames=CLASSNAMES,
                    **scorer_kw):
    torch.manual_seed(seed)
    kw = dict(
        type='NegLabelScorer',
        txt_dir=str(txt_dir),
        lexnames=LEXNAMES,
        ngroup=4,
        batch_size=64,
        cache_dir=cache_dir if cache_dir in (None, False) else str(cache_dir))
    kw.update(scorer_kw)
    clf = MultiModalClassifier(
        arch='tiny-vit-32px',
        pretrained=None,
        classnames=classnames,
        ood_scorers=[kw, dict(type='MCMScorer')])
    return clf.eval()


def count_encodes(monkeypatch, clf):
    """Spy on ``clf.encode_prompts``; returns the list of batch sizes."""
    calls = []
    original = clf.encode_prompts

    def spy(tokens, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, **kwargs)

    monkeypatch.setattr(clf, 'encode_prompts', spy)
    return calls


def direct_mining(clf, nouns, adjs, noun_template='the nice {}',
                  adj_template='This is a {} photo', percentile=0.95,
                  ratio=0.15):
    """Independent path: encode all candidates at once and mine."""
    n = clf.encode_prompts(
        tokenize([noun_template.format(w) for w in nouns],
                 clf.context_length))
    a = clf.encode_prompts(
        tokenize([adj_template.format(w) for w in adjs], clf.context_length))
    ni, ai = mine_negative_labels(clf.class_embeddings(), n, a, percentile,
                                  ratio)
    labels = [nouns[i] for i in ni] + [adjs[i] for i in ai]
    kinds = ['n'] * len(ni) + ['a'] * len(ai)
    return labels, kinds, torch.cat([n[ni], a[ai]])


def cache_files(cache_dir):
    """The mined-negatives cache files (token caches are separate)."""
    return sorted(p.name for p in Path(cache_dir).glob('neglabel_*'))


# --------------------------------------------------------------- mining
def test_read_candidates(txt_dir):
    nouns, adjs = cands.read_candidates(txt_dir['dir'], LEXNAMES)
    assert nouns == txt_dir['nouns']
    assert adjs == txt_dir['adjs']
    assert not set(nouns) & set(adjs)
    # the order of `lexnames` does not matter: files are read sorted
    assert cands.read_candidates(txt_dir['dir'], LEXNAMES[::-1]) == (nouns,
                                                                   adjs)


def test_read_candidates_equals_the_published_loader(txt_dir):
    (txt_dir['dir'] / 'README.md').write_text('not a candidate file\n')
    ref_nouns, ref_adjs = published_loader(txt_dir['dir'])
    # the published loader keeps a blank line as the word ''; we skip it
    assert '' in ref_nouns + ref_adjs
    ref_nouns = [w for w in ref_nouns if w]
    ref_adjs = [w for w in ref_adjs if w]
    assert cands.read_candidates(txt_dir['dir'],
                               LEXNAMES) == (ref_nouns, ref_adjs)


def test_shipped_candidates_are_read_with_one_seen_set():
    """The shipped txtfiles: one seen-set across all 27 files in sorted
    order, so no word is both a noun and an adjective candidate, and the
    pools are the published loader's."""
    nouns, adjs = cands.read_candidates(cands.default_txt_dir(),
                                      nls.DEFAULT_LEXNAMES)
    assert (nouns, adjs) == published_loader(cands.default_txt_dir())
    assert not set(nouns) & set(adjs)
    assert len(set(nouns)) == len(nouns) and len(set(adjs)) == len(adjs)


def test_mined_set_matches_direct_mining(txt_dir, tmp_path):
    clf = make_classifier(txt_dir['dir'], tmp_path / 'cache')
    scorer = clf.ood_scorers[0]
    assert isinstance(scorer, NegLabelScorer) and scorer.name == 'NegLabel'
    scorer.prepare(clf.scorer_context())
    labels, kinds, embeds = direct_mining(clf, txt_dir['nouns'],
                                          txt_dir['adjs'])
    assert len(labels) == int(59 * 0.15) + int(40 * 0.15)
    assert scorer.neg_labels == labels
    assert scorer.neg_kinds == kinds
    torch.testing.assert_close(scorer.neg_embeds, embeds, rtol=0, atol=1e-5)
    assert scorer.group_indices.shape == (4, len(labels) // 4)
    # derived state is not checkpointed
    assert not any('neg_embeds' in k or 'group_indices' in k
                   for k in clf.state_dict())


def test_scores_match_neglabel_score(txt_dir, tmp_path):
    clf = make_classifier(txt_dir['dir'], tmp_path / 'cache')
    images = torch.randn(5, 3, 32, 32)
    samples = clf.predict(images)  # prepares the scorers
    _, _, neg = direct_mining(clf, txt_dir['nouns'], txt_dir['adjs'])
    emb = F.normalize(clf.encode_image(images).float(), dim=-1)
    cos = emb @ clf.class_embeddings().T
    expected = neglabel_score(cos, emb @ neg.T, 0.01, ngroup=4, seed=0)
    got = torch.tensor([s.ood_scores['NegLabel'] for s in samples])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert set(samples[0].ood_scores) == {'NegLabel', 'MCM'}


def test_forward_requires_prepare(txt_dir, tmp_path):
    scorer = NegLabelScorer(txt_dir=str(txt_dir['dir']), lexnames=LEXNAMES)
    with pytest.raises(RuntimeError, match='prepare'):
        scorer(torch.zeros(1, 4), torch.zeros(1, 2), torch.tensor(1.0))


# ---------------------------------------------------------------- cache
def test_cache_hit_skips_encoding(txt_dir, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    clf = make_classifier(txt_dir['dir'], cache)
    first = clf.ood_scorers[0]
    first.prepare(clf.scorer_context())
    assert cache_files(cache) == [first.cache_file.name]
    assert first.cache_file.name.startswith('neglabel_')

    clf2 = make_classifier(txt_dir['dir'], cache, seed=1)
    clf2.load_state_dict(clf.state_dict())
    calls = count_encodes(monkeypatch, clf2)
    second = clf2.ood_scorers[0]
    second.prepare(clf2.scorer_context())
    assert calls == []  # neither candidates nor ID prompts were encoded
    assert second.cache_file == first.cache_file
    assert second.neg_labels == first.neg_labels
    assert second.neg_kinds == first.neg_kinds
    assert torch.equal(second.neg_embeds, first.neg_embeds)
    assert torch.equal(second.group_indices, first.group_indices)
    assert cache_files(cache) == [first.cache_file.name]  # no tmp left


def test_cache_key_changes(txt_dir, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    base = make_classifier(txt_dir['dir'], cache)
    base.ood_scorers[0].prepare(base.scorer_context())
    seen = {base.ood_scorers[0].cache_file}

    def prepare_fresh(clf, expect_hit):
        calls = count_encodes(monkeypatch, clf)
        scorer = clf.ood_scorers[0]
        scorer.prepare(clf.scorer_context())
        assert bool(calls) != expect_hit
        return scorer.cache_file

    def clone(**kw):
        clf = make_classifier(kw.pop('txt', txt_dir['dir']), cache, **kw)
        clf.load_state_dict(base.state_dict())
        return clf

    # the image tower is not part of the key
    clf = clone()
    with torch.no_grad():
        clf.clip.visual.conv1.weight.add_(0.5)
    assert prepare_fresh(clf, expect_hit=True) in seen

    # a text-tower weight
    clf = clone()
    with torch.no_grad():
        clf.clip.ln_final.bias.add_(0.01)
    clf.invalidate_cache()
    variants = [prepare_fresh(clf, expect_hit=False)]

    # a hyper-parameter and a template (more in the key-only test below)
    for kw in (dict(ratio=0.2), dict(noun_template='a {}')):
        variants.append(prepare_fresh(clone(**kw), expect_hit=False))

    # candidate list content
    changed = tmp_path / 'changed'
    changed.mkdir()
    for p in txt_dir['dir'].iterdir():
        (changed / p.name).write_text(p.read_text())
    with open(changed / 'adj.all.txt', 'a') as f:
        f.write('zuzu\n')
    variants.append(prepare_fresh(clone(txt=changed), expect_hit=False))

    assert len(set(variants)) == len(variants)
    assert not seen & set(variants)
    assert len(cache_files(cache)) == 1 + len(variants)
    # groups/temperature/seed only affect scoring: same mined set
    assert prepare_fresh(
        clone(ngroup=2, temperature=0.5, seed=3), expect_hit=True) in seen


def test_cache_key_covers_settings(txt_dir, tmp_path):
    """Key-only checks of the remaining inputs (no mining)."""
    clf = make_classifier(txt_dir['dir'], False)
    nouns, adjs = txt_dir['nouns'], txt_dir['adjs']

    def key(clf=clf, nouns=nouns, adjs=adjs, **kw):
        scorer = NegLabelScorer(
            txt_dir=str(txt_dir['dir']), lexnames=LEXNAMES, **kw)
        return scorer.cache_key(clf.scorer_context(), nouns, adjs)

    base = key()
    assert key() == base and key(ngroup=7, temperature=1.0, seed=5) == base
    others = [
        key(percentile=0.9), key(ratio=0.3), key(adj_template='a {} one'),
        key(noun_template='a {}'), key(nouns=nouns[:-1]),
        key(adjs=adjs[::-1]), key(nouns=nouns + adjs[:1],
                                  adjs=adjs[1:])
    ]
    clf.test_template = 'a photo of a {}'
    others.append(key())
    clf.test_template = 'the nice {}'
    clf.classnames = CLASSNAMES[::-1]
    others.append(key())
    clf.classnames = CLASSNAMES
    assert key() == base
    with torch.no_grad():
        clf.clip.token_embedding.weight[3, 0] += 1e-3
    others.append(key())
    assert len(set(others)) == len(others) and base not in others


def test_cache_dir_env_and_disabled(txt_dir, tmp_path, monkeypatch):
    monkeypatch.setenv('CMA_OOD_CACHE', str(tmp_path / 'env'))
    clf = make_classifier(txt_dir['dir'], None)
    scorer = clf.ood_scorers[0]
    assert scorer.resolved_cache_dir() == tmp_path / 'env' / 'neglabel'
    scorer.prepare(clf.scorer_context())
    assert scorer.cache_file.parent == tmp_path / 'env' / 'neglabel'
    assert scorer.cache_file.is_file()

    monkeypatch.setenv('CMA_OOD_CACHE', str(tmp_path / 'env2'))
    clf = make_classifier(txt_dir['dir'], False)
    scorer = clf.ood_scorers[0]
    scorer.prepare(clf.scorer_context())
    assert scorer.cache_file is None
    assert not (tmp_path / 'env2').exists()

    monkeypatch.delenv('CMA_OOD_CACHE')
    assert nls.default_cache_dir('neglabel') == Path(
        osp.expanduser('~/.cache/cma_ood/neglabel'))


def test_corrupt_cache_is_ignored(txt_dir, tmp_path):
    cache = tmp_path / 'cache'
    clf = make_classifier(txt_dir['dir'], cache)
    scorer = clf.ood_scorers[0]
    scorer.prepare(clf.scorer_context())
    labels = scorer.neg_labels
    scorer.cache_file.write_bytes(b'not a torch file')
    scorer.prepare(clf.scorer_context())  # mines again and rewrites the file
    assert scorer.neg_labels == labels
    data = torch.load(scorer.cache_file, weights_only=True)
    assert data['labels'] == labels


# ------------------------------------------------- distributed (simulated)
def test_distributed_flow(txt_dir, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    sent = []
    monkeypatch.setattr(nls, 'broadcast_object_list',
                        lambda objs: sent.append(list(objs)))
    monkeypatch.setattr(nls, 'get_dist_info', lambda: (0, 2))
    clf = make_classifier(txt_dir['dir'], cache)
    clf.ood_scorers[0].prepare(clf.scorer_context())  # rank 0 mines, saves, broadcasts
    assert sent == [[None]] and clf.ood_scorers[0].cache_file.is_file()

    # rank 1 waits for rank 0, then reads the cache without encoding
    monkeypatch.setattr(nls, 'get_dist_info', lambda: (1, 2))
    clf1 = make_classifier(txt_dir['dir'], cache)
    clf1.load_state_dict(clf.state_dict())
    calls = count_encodes(monkeypatch, clf1)
    clf1.ood_scorers[0].prepare(clf1.scorer_context())
    assert calls == []
    assert clf1.ood_scorers[0].neg_labels == clf.ood_scorers[0].neg_labels

    # rank 1 cannot see the file (node-local cache): it mines itself
    clf1.ood_scorers[0].cache_file.unlink()
    clf1.ood_scorers[0].prepare(clf1.scorer_context())
    assert calls and clf1.ood_scorers[0].neg_labels == \
        clf.ood_scorers[0].neg_labels

    # rank 0 fails: every rank hears about it
    def fail(*args):
        raise RuntimeError('boom')

    monkeypatch.setattr(nls, 'get_dist_info', lambda: (0, 2))
    clf0 = make_classifier(txt_dir['dir'], tmp_path / 'other')
    monkeypatch.setattr(clf0.ood_scorers[0], 'mine', fail)
    sent.clear()
    with pytest.raises(RuntimeError, match='boom'):
        clf0.ood_scorers[0].prepare(clf0.scorer_context())
    assert 'boom' in sent[0][0]

    monkeypatch.setattr(nls, 'get_dist_info', lambda: (1, 2))

    def receive(objs):
        objs[0] = 'RuntimeError: boom'

    monkeypatch.setattr(nls, 'broadcast_object_list', receive)
    with pytest.raises(RuntimeError, match='failed on rank 0.*boom'):
        make_classifier(txt_dir['dir'], tmp_path / 'other').ood_scorers[
            0].prepare(clf0.scorer_context())


def test_validation_skips_neglabel_unless_opted_in(txt_dir, tmp_path,
                                                  monkeypatch):
    """val_step (validation during training) runs the cheap scorers only;
    NegLabel is mined at test time, or at validation with
    at_validation=True."""
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    data = dict(inputs=list(images), data_samples=None)
    clf = make_classifier(txt_dir['dir'], False)
    assert clf.ood_scorers[0].at_validation is False
    assert clf.ood_scorers[1].at_validation is True
    calls = count_encodes(monkeypatch, clf)
    val = clf.val_step(data)
    assert set(val[0].ood_scores) == {'MCM'}
    assert calls == [len(CLASSNAMES)]  # the ID prompts only, no mining
    test = clf.test_step(data)
    assert set(test[0].ood_scores) == {'NegLabel', 'MCM'}
    assert calls == [len(CLASSNAMES), 59 + 40]  # now the candidates too
    torch.testing.assert_close(
        torch.tensor([s.ood_scores['MCM'] for s in val]),
        torch.tensor([s.ood_scores['MCM'] for s in test]))
    opted = make_classifier(txt_dir['dir'], False, at_validation=True)
    assert set(opted.val_step(data)[0].ood_scores) == {'NegLabel', 'MCM'}


def test_cache_evicts_superseded_weights(txt_dir, tmp_path):
    """A size-bounded cache: the entries of earlier weights (e.g. the
    epochs of a training run) are evicted, least recently used first."""
    cache = tmp_path / 'cache'
    first = make_classifier(txt_dir['dir'], cache, seed=0)
    first.ood_scorers[0].prepare(first.scorer_context())
    one_entry = sum(p.stat().st_size for p in cache.glob('neglabel_*'))
    tokens = sum(p.stat().st_size for p in cache.glob('tokens-*'))
    bound = tokens + int(one_entry * 1.5)  # room for one mined entry
    for seed in (1, 2):
        clf = make_classifier(txt_dir['dir'], cache, seed=seed,
                              cache_max_bytes=bound)
        clf.ood_scorers[0].prepare(clf.scorer_context())
        # only the entry of the current weights is left, next to the tokens
        assert cache_files(cache) == [clf.ood_scorers[0].cache_file.name]
        assert len(list(cache.glob('tokens-*'))) == 1
    with pytest.raises(ValueError, match='cache_max_bytes'):
        NegLabelScorer(cache_max_bytes=-1)


def test_prune_cache_is_lru_and_keeps_the_new_file(tmp_path):
    from cma_ood.utils.cache import mark_used, prune_cache
    files = []
    for i in range(4):
        path = tmp_path / f'neglabel_{i}.pt'
        path.write_bytes(b'x' * 100)
        os.utime(path, (1000 + i, 1000 + i))
        files.append(path)
    (tmp_path / 'other.bin').write_bytes(b'y' * 1000)  # not matched
    mark_used(files[0])  # read just now: the most recently used
    deleted = prune_cache(tmp_path, ['neglabel_*.pt'], 250, keep=[files[1]])
    assert deleted == [files[2], files[3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'neglabel_0.pt', 'neglabel_1.pt', 'other.bin']
    assert prune_cache(tmp_path, ['neglabel_*.pt'], 0,
                       keep=[files[1]]) == [files[0]]
    with pytest.raises(ValueError, match='max_bytes'):
        prune_cache(tmp_path, ['*'], -1)


# ---------------------------------------------------------- label files
def test_dump_and_reload_labels(txt_dir, tmp_path):
    dump = tmp_path / 'out' / 'neg.txt'
    clf = make_classifier(txt_dir['dir'], False, dump_labels=str(dump))
    images = torch.randn(6, 3, 32, 32)
    scores = torch.tensor(
        [s.ood_scores['NegLabel'] for s in clf.predict(images)])
    scorer = clf.ood_scorers[0]
    lines = dump.read_text().splitlines()
    assert lines == [f'{k}\t{w}' for w, k in zip(scorer.neg_labels,
                                                 scorer.neg_kinds)]

    clf2 = make_classifier(
        tmp_path / 'nowhere', False, neg_labels_file=str(dump))
    clf2.load_state_dict(clf.state_dict())
    scores2 = torch.tensor(
        [s.ood_scores['NegLabel'] for s in clf2.predict(images)])
    reloaded = clf2.ood_scorers[0]
    assert reloaded.neg_labels == scorer.neg_labels
    assert reloaded.neg_kinds == scorer.neg_kinds
    torch.testing.assert_close(
        reloaded.neg_embeds, scorer.neg_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(scores2, scores, rtol=1e-4, atol=1e-6)


def test_read_label_file_formats(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_text('n\tfirst word\na\tblue\nplain label\n\n  spaced \n')
    labels, kinds = cands.read_label_file(path)
    assert labels == ['first word', 'blue', 'plain label', 'spaced']
    assert kinds == ['n', 'a', 'n', 'n']
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        cands.read_label_file(tmp_path / 'missing.txt')
    (tmp_path / 'empty.txt').write_text('\n\n')
    with pytest.raises(ValueError, match='no labels'):
        cands.read_label_file(tmp_path / 'empty.txt')


def write_cma_prompt_array(path, adjs, nouns):
    """A small stand-in for CMA's neg_label_10000.npy: "This is a X photo"
    prompts, then "The nice X" prompts, as a numpy array of str."""
    import numpy as np
    prompts = [f'This is a {w} photo' for w in adjs] + \
        [f'The nice {w}' for w in nouns]
    np.save(path, np.array(prompts))
    return prompts


def cma_inference_scores(clf, images, prompts):
    """CMA's inference.py restated: normalised image / ID-prompt / negative
    prompt features, softmax(cat([cos_id, cos_neg]) / 0.01) summed over the
    ID columns (one softmax), and MCM = max softmax(cos_id) (T = 1)."""
    img = F.normalize(clf.encode_image(images).float(), dim=-1).double()
    id_txt = F.normalize(clf.clip.encode_text(
        tokenize([f'The nice {c}' for c in clf.classnames],
                 clf.context_length)).float(),
        dim=-1).double()
    neg_txt = F.normalize(clf.clip.encode_text(
        tokenize(prompts, clf.context_length)).float(), dim=-1).double()
    cos_id, cos_neg = img @ id_txt.T, img @ neg_txt.T
    full = torch.cat([cos_id, cos_neg], dim=1) / 0.01
    neglabel = full.softmax(dim=1)[:, :cos_id.shape[1]].sum(dim=1)
    mcm = cos_id.softmax(dim=1).max(dim=1).values
    return neglabel, mcm


def test_cma_fixed_prompt_array_is_cmas_inference(tmp_path):
    """NegLabelScorer(neg_labels_file=<.npy>, ngroup=1) + MCMScorer() on
    'The nice {}' ID prompts give exactly CMA's inference.py scores."""
    npy = tmp_path / 'neg_label_10000.npy'
    prompts = write_cma_prompt_array(npy, words(0, 7), words(30, 13))
    torch.manual_seed(0)
    clf = MultiModalClassifier(
        arch='tiny-vit-32px', pretrained=None, classnames=CLASSNAMES,
        test_template='The nice {}',
        ood_scorers=[
            dict(type='NegLabelScorer', neg_labels_file=str(npy),
                 temperature=0.01, ngroup=1, cache_dir=False),
            dict(type='MCMScorer')]).eval()
    images = torch.randn(6, 3, 32, 32)
    samples = clf.predict(images)
    scorer = clf.ood_scorers[0]
    assert scorer.neg_labels == prompts and set(scorer.neg_kinds) == {'p'}
    neglabel, mcm = cma_inference_scores(clf, images, prompts)
    got = torch.tensor([[s.ood_scores['NegLabel'], s.ood_scores['MCM']]
                        for s in samples], dtype=torch.float64)
    torch.testing.assert_close(got[:, 0], neglabel, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got[:, 1], mcm, rtol=1e-5, atol=1e-7)
    # prompts are encoded verbatim: no template around them
    direct = clf.encode_prompts(tokenize(prompts, clf.context_length))
    torch.testing.assert_close(scorer.neg_embeds, direct, rtol=0, atol=1e-6)


def test_prompt_array_dump_round_trip(tmp_path):
    npy = tmp_path / 'neg.npy'
    prompts = write_cma_prompt_array(npy, ['red'], ['cat'])
    labels, kinds = cands.read_label_file(npy)
    assert (labels, kinds) == (prompts, ['p', 'p'])
    dump = tmp_path / 'dump.txt'
    cands.write_label_file(dump, labels, kinds)
    assert cands.read_label_file(dump) == (labels, kinds)


@pytest.mark.parametrize('array,why', [
    ('2d', 'shape'), ('int', 'dtype'), ('empty', 'shape'),
    ('object', 'not a numpy .npy array'), ('blank', 'empty prompt'),
    ('garbage', 'not a numpy .npy array')])
def test_prompt_array_errors_name_the_file(tmp_path, array, why):
    import numpy as np
    path = tmp_path / f'{array}.npy'
    if array == '2d':
        np.save(path, np.array([['a', 'b'], ['c', 'd']]))
    elif array == 'int':
        np.save(path, np.arange(3))
    elif array == 'empty':
        np.save(path, np.array([], dtype='<U5'))
    elif array == 'object':
        np.save(path, np.array(['a', None], dtype=object), allow_pickle=True)
    elif array == 'blank':
        np.save(path, np.array(['This is a red photo', '  ']))
    else:
        path.write_text('hello\n')
    with pytest.raises(ValueError, match=why) as err:
        cands.read_label_file(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match='missing.npy'):
        cands.read_label_file(tmp_path / 'missing.npy')


# --------------------------------------------------------------- errors
def test_missing_candidate_file(txt_dir, tmp_path):
    clf = make_classifier(
        txt_dir['dir'], False, lexnames=LEXNAMES + ('noun.motive',
                                                    'adj.pert'))
    with pytest.raises(FileNotFoundError) as err:
        clf.ood_scorers[0].prepare(clf.scorer_context())
    msg = str(err.value)
    assert 'noun.motive.txt' in msg and 'adj.pert.txt' in msg


def test_ngroup_too_large(txt_dir, tmp_path):
    clf = make_classifier(txt_dir['dir'], False, ngroup=100)
    with pytest.raises(ValueError, match=r'ngroup=100 exceeds .* \(14\)'):
        clf.ood_scorers[0].prepare(clf.scorer_context())


@pytest.mark.parametrize('kw', [
    dict(ngroup=0), dict(ratio=0.0), dict(ratio=1.5), dict(percentile=2.0),
    dict(temperature=0.0), dict(noun_template='no placeholder'),
    dict(lexnames=('verb.body', )), dict(batch_size=0)
])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        NegLabelScorer(**kw)


def test_default_txt_dir():
    assert cands.default_txt_dir() == REPO / 'txtfiles'
    scorer = NegLabelScorer()
    assert scorer.lexnames == DEFAULT_LEXNAMES
    for name in DEFAULT_LEXNAMES:
        assert (scorer.resolved_txt_dir() / f'{name}.txt').is_file()


# -------------------------------------------------------------- configs
#: re-mining NegLabel configs: (path, resize interpolation, metric protocol)
NEGLABEL_CONFIGS = [
    # NegLabel's ood_dataset.py: torchvision Resize(224) bilinear
    ('configs/neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py', 'bilinear',
     'mos'),
    # CMA fine-tuned models keep CLIP's bicubic preprocessing of training
    ('configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py', 'bicubic',
     'mos'),
    ('configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-openood.py',
     'bicubic', 'openood'),
]


def ood_pipeline(cfg):
    """The (shared) test pipeline of an OoD config's benchmark."""
    dataset = cfg.test_dataloader.dataset
    assert dataset.type == 'OoDConcatDataset'
    for member in (dataset.id_dataset, *dataset.ood_datasets.values()):
        assert 'pipeline' not in member  # one pipeline for every set
    return dataset.pipeline


def check_resize(cfg, interpolation):
    load, resize, crop, pack = ood_pipeline(cfg)
    assert resize == dict(type='ResizeEdge', scale=224, edge='short',
                          backend='pillow', interpolation=interpolation)
    assert crop == dict(type='CenterCrop', crop_size=224)


@pytest.mark.parametrize('path,interpolation,protocol', NEGLABEL_CONFIGS)
def test_neglabel_config_models(path, interpolation, protocol):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(REPO / path))
    model_cfg = cfg.model
    assert model_cfg.arch == 'ViT-B/16'
    assert model_cfg.classnames == 'imagenet'
    assert model_cfg.test_template == 'the nice {}'
    neg, mcm = model_cfg.ood_scorers
    assert neg.type == 'NegLabelScorer' and mcm.type == 'MCMScorer'
    assert mcm.temperature == 1.0  # MCM's published T = 1 on the cosine
    model_cfg.pretrained = None
    if 'cma/' in path:  # CMA fine-tuning settings are inherited
        assert model_cfg.loss == dict(type='CMALoss', lam=0.001)
        assert cfg.train_cfg.max_epochs == 10
        model_cfg.arch = 'tiny-vit-32px'  # keep the test fast
    model = MODELS.build(model_cfg)
    scorer = model.ood_scorers[0]
    assert isinstance(scorer, NegLabelScorer)
    # the NegLabel paper setting
    assert scorer.noun_template == 'the nice {}'
    assert scorer.adj_template == 'This is a {} photo'
    assert (scorer.percentile, scorer.ratio, scorer.temperature,
            scorer.ngroup) == (0.95, 0.15, 0.01, 100)
    assert scorer.lexnames == DEFAULT_LEXNAMES
    assert scorer.txt_dir is None and scorer.cache_dir is None
    assert [s.name for s in model.ood_scorers] == ['NegLabel', 'MCM']
    assert model.num_classes == 1000
    expected_metric = dict(type='OoDMetric')
    if protocol != 'mos':
        expected_metric['protocol'] = protocol
    assert cfg.test_evaluator == expected_metric
    # the OoD test set replaced (not merged into) any inherited one
    dataset = cfg.test_dataloader.dataset
    assert set(dataset) <= {'type', 'id_dataset', 'ood_datasets',
                            'ood_groups', 'pipeline'}
    assert dataset.id_dataset.type == 'ImageNet'
    assert dataset.id_dataset.split == 'val'
    check_resize(cfg, interpolation)
    assert cfg.test_dataloader.batch_size == 256
    assert 'test_cfg' in cfg


def test_cma_fixed_negatives_config_is_cmas_inference():
    """CMA's inference.py: the fixed neg_label_10000.npy encoded verbatim,
    one softmax over [ID, negatives] / 0.01 (no groups), MCM at T = 1,
    ID prompts "The nice {c}", bicubic preprocessing, 'cma' metrics."""
    cfg = Config.fromfile(str(
        REPO / 'configs/cma/cma-neglabel-fixed_clip-vit-b16_4xb128_in1k-mos.py'))
    neg, mcm = cfg.model.ood_scorers
    assert neg == dict(type='NegLabelScorer',
                       neg_labels_file='data/neglabel/neg_label_10000.npy',
                       temperature=0.01, ngroup=1)
    assert mcm == dict(type='MCMScorer', temperature=1.0)
    assert cfg.model.test_template.lower() == 'the nice {}'
    assert cfg.test_evaluator == dict(type='OoDMetric', protocol='cma')
    check_resize(cfg, 'bicubic')
    assert cfg.model.loss == dict(type='CMALoss', lam=0.001)


def test_mcm_config_model():
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(
        str(REPO / 'configs/mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py'))
    cfg.model.pretrained = None
    cfg.model.arch = 'tiny-vit-32px'
    model = MODELS.build(cfg.model)
    assert [s.name for s in model.ood_scorers] == ['MCM']
    # MCM's eval_ood_detection.py: T = 1, "a photo of a {}", bilinear
    assert model.ood_scorers[0].temperature == 1.0
    assert model.test_template == 'a photo of a {}'
    check_resize(cfg, 'bilinear')
    assert cfg.test_evaluator == dict(type='OoDMetric')


def test_prepare_scorers_hook_prepares_before_the_loop(txt_dir, monkeypatch):
    """PrepareScorersHook: the scorers are prepared (NegLabel mined) before
    the test loop, through the model's ScorerContext, so the first
    test_step encodes nothing but the images; before validation only the
    at_validation scorers are."""
    from types import SimpleNamespace
    from cma_ood.engine.hooks import PrepareScorersHook
    from cma_ood.models.ood_scorers import ScorerContext
    clf = make_classifier(txt_dir['dir'], False)
    clf.train()
    seen = []
    original = NegLabelScorer.prepare

    def spy(self, context):
        seen.append(type(context))
        return original(self, context)

    monkeypatch.setattr(NegLabelScorer, 'prepare', spy)
    runner = SimpleNamespace(model=clf)
    PrepareScorersHook().before_val(runner)
    assert not clf.training and clf._prepared == {'MCM'} and seen == []
    PrepareScorersHook().before_test(runner)
    assert clf._prepared == {'NegLabel', 'MCM'} and seen == [ScorerContext]
    calls = count_encodes(monkeypatch, clf)
    clf.test_step(dict(inputs=list(torch.randint(0, 255, (2, 3, 32, 32),
                                                 dtype=torch.uint8)),
                       data_samples=None))
    assert calls == [] and len(seen) == 1  # nothing prepared again
    clf.train()  # new weights: everything is prepared again
    assert clf._prepared == set()


def test_scorer_context_describes_the_model(txt_dir):
    clf = make_classifier(txt_dir['dir'], False)
    ctx = clf.scorer_context()
    assert ctx.classnames == CLASSNAMES and ctx.num_classes == 6
    assert ctx.test_template == clf.test_template
    assert ctx.context_length == clf.context_length == 24
    assert ctx.embed_dim == 64 and ctx.image_tower is clf.clip.visual
    torch.testing.assert_close(ctx.class_embeddings(),
                               clf.class_embeddings())
    prompts = ['the nice cat', 'This is a red photo']
    torch.testing.assert_close(
        ctx.encode_text(prompts),
        F.normalize(clf.clip.encode_text(
            tokenize(prompts, 24)).float(), dim=-1), rtol=1e-5, atol=1e-6)
    from cma_ood.models.utils.fingerprint import (image_tower_sha256,
                                                  text_tower_sha256)
    assert ctx.text_fingerprint() == text_tower_sha256(clf.clip)
    assert ctx.image_fingerprint() == image_tower_sha256(clf.clip)
