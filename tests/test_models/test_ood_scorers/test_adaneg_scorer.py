"""AdaNegScorer: AdaNeg's negatives through the classifier, the stream run
by OoDMetric (handed over by PrepareScorersHook), per-set reset, seed and
ID ratio in the report, results gathered as in a distributed run, and the
config."""
import os.path as osp
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401
from _helpers import REPO
from cma_ood.engine.hooks import PrepareScorersHook
from cma_ood.evaluation import OoDMetric, ood_metrics
from cma_ood.evaluation.ood_metric import format_ood_table
from cma_ood.models import MultiModalClassifier
from cma_ood.models.multimodal.clip_builder import tokenize
from cma_ood.models.ood_scorers.functional.adaneg import (
    adaneg_stream, adaneg_stream_order)

pytestmark = pytest.mark.usefixtures('single_thread')
CLASSNAMES = ['cat', 'dog', 'car', 'tree']
SYL = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'to', 'vi']
WORDS = [a + b + c for a in SYL for b in SYL for c in SYL]
META = dict(id_source='ID', ood_sources=('ID', 'A', 'B'))
SIZES = (('ID', 24), ('A', 10), ('B', 13))


@pytest.fixture(scope='module')
def txt_dir(tmp_path_factory):
    """Two noun files sharing words, one adjective file sharing words with
    the nouns, and an ID class name among the nouns."""
    root = tmp_path_factory.mktemp('txtfiles')
    (root / 'noun.act.txt').write_text('\n'.join(WORDS[:60] + ['dog']))
    (root / 'noun.Tops.txt').write_text('\n'.join(WORDS[50:90]) + '\n')
    (root / 'adj.all.txt').write_text('\n'.join(WORDS[80:120]) + '\n')
    return root


def make_classifier(txt_dir, **kw):
    torch.manual_seed(0)
    scorer = dict(type='AdaNegScorer', txt_dir=str(txt_dir),
                  lexnames=('noun.act', 'noun.Tops', 'adj.all'),
                  num_negatives=30, stream_batch_size=8, cache_dir=False,
                  show_progress=False, batch_size=64)
    scorer.update(kw)
    return MultiModalClassifier(
        arch='tiny-vit-32px', pretrained=None, classnames=CLASSNAMES,
        test_template='The nice {}.',
        ood_scorers=[scorer, dict(type='MCMScorer')]).eval()


def make_images(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {s: torch.randint(0, 256, (n, 3, 32, 32), generator=gen,
                             dtype=torch.uint8) for s, n in SIZES}


@torch.no_grad()
def predicted_samples(clf, images):
    """predict() outputs as the evaluator hands them to process: dicts,
    tagged as OoDConcatDataset tags them, batches of 5."""
    out, index = [], 0
    for source, imgs in images.items():
        for start in range(0, len(imgs), 5):
            batch = imgs[start:start + 5]
            samples = []
            for _ in batch:
                ds = DataSample()
                ds.set_metainfo(dict(ood_source=source, ood_index=index))
                samples.append(ds.set_gt_label(0) if source == 'ID' else ds)
                index += 1
            data = clf.data_preprocessor(
                dict(inputs=list(batch), data_samples=samples))
            out.append([d.to_dict() for d in
                        clf.predict(data['inputs'], data['data_samples'])])
    return out


def run_metric(clf, batches, **kw):
    metric = OoDMetric(**kw)
    metric.dataset_meta = META
    runner = SimpleNamespace(model=clf,
                             test_evaluator=SimpleNamespace(metrics=[metric]))
    PrepareScorersHook().before_test(runner)
    for batch in batches:
        metric.process({}, batch)
    return metric, metric.evaluate(sum(n for _, n in SIZES))


@torch.no_grad()
def direct_streams(clf, images, seed, id_ratio):
    """The published protocol restated on the images' embeddings: per OoD
    set, [OoD, ID (subset)] in the seeded order, one stream each."""
    scorer = clf.ood_scorers[0]

    def encode(imgs):  # in predicted_samples' batches: the same rounding
        return torch.cat([F.normalize(clf.encode_image(clf.data_preprocessor(
            dict(inputs=list(imgs[i:i + 5])))['inputs']).float(), dim=-1)
            for i in range(0, len(imgs), 5)]).half().float()

    emb = {s: encode(imgs) for s, imgs in images.items()}
    out = {}
    for source in ('A', 'B'):
        order, id_idx = adaneg_stream_order(len(emb[source]), len(emb['ID']),
                                            seed, id_ratio)
        pool = torch.cat([emb[source], emb['ID'][id_idx]])
        s = adaneg_stream(pool[order], scorer.text_embeds, len(CLASSNAMES),
                          logit_scale=float(clf.logit_scale()),
                          batch_size=8)['score']
        scores = torch.empty(len(pool), dtype=torch.float64)
        scores[order] = s.double()
        out[source] = (scores[len(emb[source]):].numpy(),
                       scores[:len(emb[source])].numpy())
    return out


# -------------------------------------------------------------- mining
def test_negatives_follow_adanegs_rule(txt_dir):
    clf = make_classifier(txt_dir)
    clf.prepare_scorers()
    scorer = clf.ood_scorers[0]
    nouns = list(dict.fromkeys(WORDS[:90]))  # 'dog' is an ID class
    adjs = WORDS[90:120]  # 80..89 are nouns too: kept as nouns only
    n_adj = int(30 * (len(adjs) / (len(adjs) + len(nouns))))
    pos = clf.class_embeddings()
    k = int(len(CLASSNAMES) * 0.95)

    def lowest(words, template, keep):
        feats = clf.encode_prompts(tokenize(
            [template.format(w) for w in words], clf.context_length))
        value = (feats @ pos.T).sort(1).values[:, k]
        idx = value.sort(dim=0, stable=True).indices[:keep]
        return [words[i] for i in idx], feats[idx]

    want_adj, adj_feats = lowest(adjs, 'This is a {} photo.', n_adj)
    want_noun, noun_feats = lowest(nouns, 'The nice {}.', 30 - n_adj)
    assert scorer.neg_labels == want_adj + want_noun
    assert scorer.neg_kinds == ['a'] * n_adj + ['n'] * (30 - n_adj)
    torch.testing.assert_close(scorer.text_embeds,
                               torch.cat([pos, adj_feats, noun_feats]))
    assert scorer.group_indices.shape == (5, 6)
    # AdaNeg's negatives are cached apart from NegLabel's
    ctx = clf.scorer_context()
    neglabel = MultiModalClassifier(
        arch='tiny-vit-32px', pretrained=None, classnames=CLASSNAMES,
        ood_scorers=[dict(type='NegLabelScorer', txt_dir=str(txt_dir),
                          lexnames=('noun.act', 'noun.Tops', 'adj.all'),
                          percentile=0.95, ratio=1.0)]).ood_scorers[0]
    cands = scorer.read_candidates()
    assert scorer.cache_key(ctx, *cands) != neglabel.cache_key(ctx, *cands)


# -------------------------------------------------------------- stream
def test_stream_through_the_metric_equals_the_published_protocol(txt_dir):
    clf = make_classifier(txt_dir, stream_seed=3, id_ratio=1.5)
    images = make_images()
    metric, res = run_metric(clf, predicted_samples(clf, images))
    want = direct_streams(clf, images, seed=3, id_ratio=1.5)
    report = metric.last_report
    for source, (id_s, ood_s) in want.items():
        assert len(id_s) == round(1.5 * len(ood_s))  # the ID:OoD ratio
        vals = ood_metrics(id_s, ood_s, protocol='mos')
        for key, value in vals.items():
            assert res[f'ood/AdaNeg/{source}/{key}'] == pytest.approx(
                value, abs=1e-9)
        arrays = metric.last_scores[f'AdaNeg[{source}]']
        np.testing.assert_allclose(arrays['ID'], id_s, rtol=1e-6)
        np.testing.assert_allclose(arrays[source], ood_s, rtol=1e-6)
        assert report['scores'][f'AdaNeg[{source}]'][source] == \
            report['scores']['AdaNeg'][source]
    assert res['ood/AdaNeg/mean/AUROC'] == pytest.approx(np.mean(
        [res['ood/AdaNeg/A/AUROC'], res['ood/AdaNeg/B/AUROC']]))
    streams = report['streams']['AdaNeg']
    assert streams['stream_seed'] == 3 and streams['id_ratio'] == 1.5
    assert streams['sets'] == dict(A=dict(num_id=15, num_ood=10),
                                   B=dict(num_id=20, num_ood=13))
    assert 'AdaNeg' not in metric.last_scores  # the placeholder is gone
    assert list(report['scores'])[0] == 'AdaNeg'  # in its place
    assert 'ood/MCM/A/AUROC' in res  # other scores as before
    # the logged table shows the AdaNeg row once, not its per-stream pairs
    table = format_ood_table(report)
    assert table.count('AdaNeg') == 1 and 'AdaNeg[' not in table

    # the memory is reset per OoD set: streams over A and B at once equal
    # a stream over each alone
    scorer = clf.ood_scorers[0]
    gen = torch.Generator().manual_seed(1)
    emb = {s: F.normalize(torch.randn(n, 64, generator=gen), dim=-1)
           for s, n in SIZES}
    both = scorer.score_streams(emb['ID'], dict(A=emb['A'], B=emb['B']))
    for source in ('A', 'B'):
        alone = scorer.score_streams(emb['ID'], {source: emb[source]})
        for key in ('id_index', 'id_scores', 'ood_scores'):
            assert torch.equal(both[source][key], alone[source][key])


def test_results_travel_with_the_distributed_gather(txt_dir):
    """Each rank's metric keeps compact fp16 embeddings in its results;
    gathered (pickled) to rank 0, with a padding duplicate, they give the
    single-process numbers."""
    clf = make_classifier(txt_dir)
    batches = predicted_samples(clf, make_images(seed=1))
    single, want = run_metric(clf, batches)
    ranks = []
    for rank in range(2):
        metric, _ = OoDMetric(), None
        metric.dataset_meta = META
        metric.set_stream_scorers([clf.ood_scorers[0]])
        for batch in batches[rank::2]:
            metric.process({}, batch)
        blob = pickle.dumps(metric.results)
        assert len(blob) < 600 * len(metric.results)  # 64 fp16 per image
        ranks.append(pickle.loads(blob))
    gathered = ranks[1] + ranks[0] + ranks[0][:1]
    rank0 = OoDMetric()
    rank0.dataset_meta = META
    rank0.set_stream_scorers([clf.ood_scorers[0]])
    got = rank0.compute_metrics(gathered)
    assert got == {k[len('ood/'):]: v for k, v in want.items()}
    # the default: all ID images in every stream, seed 0
    assert rank0.last_report['streams']['AdaNeg']['sets']['A'] == dict(
        num_id=24, num_ood=10)
    assert rank0.last_report['streams']['AdaNeg']['stream_seed'] == 0


def test_stream_scorers_need_oodmetric(txt_dir):
    clf = make_classifier(txt_dir)
    runner = SimpleNamespace(model=clf, test_evaluator=SimpleNamespace(
        metrics=[object()]))
    with pytest.raises(RuntimeError, match='AdaNeg need OoDMetric'):
        PrepareScorersHook().before_test(runner)
    # validation skips AdaNeg (at_validation=False): nothing to hand over
    PrepareScorersHook().before_val(SimpleNamespace(
        model=clf, val_evaluator=SimpleNamespace(metrics=[])))
    with pytest.raises(ValueError, match='id_ratio'):
        make_classifier(txt_dir, id_ratio=0)
    with pytest.raises(ValueError, match='proxy'):
        make_classifier(txt_dir, proxy='both')


# -------------------------------------------------------------- config
def test_config_is_the_published_script():
    """scripts/ood/adaneg/imagenet.sh: thres 0.5, gap 0.5, memleng 10,
    beta int(5.5), 5 groups, lambda 0.1, 10,000 negatives, 'combine',
    task-adaptive; prompts of clip_fixed_ood_prompt.py; Resize(256)
    bicubic + CenterCrop(224); OpenOOD's metrics."""
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/adaneg/adaneg_clip-vit-b16_1xb256_in1k-mos.py'))
    assert cfg.model.test_template == 'The nice {}.'
    (scorer, ) = cfg.model.ood_scorers
    model = MODELS.build(scorer)
    assert (model.thres, model.gap, model.memory_length, model.beta,
            model.ngroup, model.lambda_vanilla, model.negatives_to_keep,
            model.score_mode, model.proxy, model.fill_last_slot,
            model.entropy_precision, model.stream_batch_size,
            model.id_ratio) == (0.5, 0.5, 10, 5.0, 5, 0.1, 10000, 'combine',
                                'task', False, 'half', 256, None)
    assert (model.noun_template, model.adj_template) == (
        'The nice {}.', 'This is a {} photo.')
    resize, crop = cfg.test_dataloader.dataset.pipeline[1:3]
    assert (resize.type, resize.scale, resize.edge, resize.interpolation,
            resize.backend) == ('ResizeEdge', 256, 'short', 'bicubic',
                                'pillow')
    assert (crop.type, crop.crop_size) == ('CenterCrop', 224)
    assert cfg.test_evaluator.protocol == 'openood'
    cma = Config.fromfile(osp.join(
        REPO, 'configs/adaneg/cma-adaneg_clip-vit-b16_1xb256_in1k-mos.py'))
    assert cma.model.ood_scorers == cfg.model.ood_scorers
    assert cma.test_evaluator.protocol == 'mos'  # as CMA + NegLabel
