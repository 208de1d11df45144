"""Probing baselines (issue #4): feature cache, PLP pseudo-labels, linear
probes through MMEngine's runner, Mahalanobis and kNN against direct
formulas, the probe/feature scorers, and one OoD table end to end."""
import importlib.util
import json
import math
import os.path as osp

import clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets import CachedFeatureDataset
from cma_ood.datasets.shapes import ID_SHAPES
from cma_ood.engine.feature_extractor import extract_features
from cma_ood.models import (PLP_TEMPLATES, KNNScorer, LinearProbe,
                            MahalanobisScorer, MultiModalClassifier,
                            ProbeScorer, knn_score, mahalanobis_fit,
                            mahalanobis_score, pseudo_labels)
from cma_ood.models.encoder_hash import image_tower_sha256
from cma_ood.models.feature_scores import background_fit
from cma_ood.utils.feature_file import (FeatureFileError, load_feature_file,
                                        save_feature_file)

from _helpers import REPO

PLP_DEMO = osp.join(REPO, 'configs/plp/plp_clip-tiny-rn_1xb256_shapes.py')
BASELINES_DEMO = osp.join(
    REPO, 'configs/demo/baselines_clip-tiny-rn_1xb256_shapes.py')


@pytest.fixture(autouse=True)
def default_scope(single_thread):
    init_default_scope('mmpretrain')  # builds ShapesDataset by name


def tiny_classifier(seed=0, classnames=ID_SHAPES):
    torch.manual_seed(seed)
    return MultiModalClassifier(
        arch='tiny-rn-32px',
        pretrained=None,
        classnames=list(classnames),
        train_template='a photo of a {}',
        test_template='a photo of a {}',
        ood_scorers=[]).eval()


def shapes_cfg(split='train', num=3):
    return dict(
        type='ShapesDataset',
        split=split,
        num_per_class=num,
        img_size=32,
        test_mode=True,
        pipeline=[dict(type='PackInputs')])


def loader_for(dataset_cfg, batch_size=8):
    return Runner.build_dataloader(
        dict(
            batch_size=batch_size,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dataset_cfg))


def extract(model, dataset_cfg, **kw):
    kw.setdefault('show_progress', False)
    return extract_features(model, loader_for(dataset_cfg),
                            dataset_cfg=dataset_cfg, **kw)


def write_features(path, feats, labels, pseudo=None, sha='0' * 64,
                   classnames=None, sources=None, source_names=('data', )):
    n = feats.shape[0]
    return save_feature_file(
        path,
        dict(
            feats=feats,
            labels=labels,
            sources=torch.zeros(n, dtype=torch.long)
            if sources is None else sources,
            source_names=list(source_names),
            pseudo_labels=pseudo,
            zero_shot_weights=None,
            classnames=classnames,
            meta=dict(cache_key='test', image_encoder_sha256=sha)))


# ----------------------------------------------------------------- PLP
def test_plp_templates_are_the_reference_ensemble():
    assert PLP_TEMPLATES == ('a photo of a {}.', 'a blurry photo of a {}.',
                             'a photo of many {}.',
                             'a photo of the large {}.',
                             'a photo of the small {}.')


def test_pseudo_labels_equal_argmax_of_ensemble_classifier(tmp_path):
    model = tiny_classifier()
    ds_cfg = shapes_cfg(num=4)
    data = load_feature_file(extract(model, ds_cfg, cache_dir=tmp_path))

    # the ensemble classifier, computed independently with clip's tokenizer
    with torch.no_grad():
        total = 0
        for template in PLP_TEMPLATES:
            tokens = clip.tokenize([template.format(c) for c in ID_SHAPES],
                                   context_length=model.context_length)
            emb = model.clip.encode_text(tokens).float()
            total = total + emb / emb.norm(dim=-1, keepdim=True)
        weights = total / len(PLP_TEMPLATES)
        weights = weights / weights.norm(dim=-1, keepdim=True)

        # the images, encoded one by one
        dataset = loader_for(ds_cfg).dataset
        feats, labels = [], []
        for i in range(len(dataset)):
            batch = model.data_preprocessor(
                dict(inputs=[dataset[i]['inputs']],
                     data_samples=[dataset[i]['data_samples']]), False)
            emb = model.clip.encode_image(batch['inputs']).float()
            feats.append(emb[0] / emb[0].norm())
            labels.append(int(dataset[i]['data_samples'].gt_label))
        feats = torch.stack(feats)

    torch.testing.assert_close(data['feats'], feats, atol=1e-5, rtol=1e-4)
    assert data['labels'].tolist() == labels
    torch.testing.assert_close(data['zero_shot_weights'], weights,
                               atol=1e-6, rtol=1e-5)
    sims = feats @ weights.T
    assert data['pseudo_labels'].tolist() == sims.argmax(1).tolist()
    assert data['classnames'] == list(ID_SHAPES)
    assert data['meta']['templates'] == list(PLP_TEMPLATES)
    assert data['source_names'] == ['ShapesDataset']
    # the pure function agrees too
    assert torch.equal(pseudo_labels(feats, weights, chunk_size=5),
                       sims.argmax(1))


def test_feature_cache_reuse(tmp_path, monkeypatch):
    model = tiny_classifier()
    calls = []
    encode = model.encode_image

    def spy(images):
        calls.append(images.shape[0])
        return encode(images)

    monkeypatch.setattr(model, 'encode_image', spy)
    ds_cfg = shapes_cfg(num=2)
    first = extract(model, ds_cfg, cache_dir=tmp_path)
    assert sum(calls) == 12
    data1 = load_feature_file(first)

    calls.clear()
    second = extract(model, ds_cfg, cache_dir=tmp_path)
    assert second == first and not calls  # nothing encoded
    data2 = load_feature_file(second)
    for key in ('feats', 'labels', 'sources', 'pseudo_labels',
                'zero_shot_weights'):
        assert torch.equal(data1[key], data2[key]), key
    assert data1['meta'] == data2['meta']

    # a text-side change (class order) recomputes only the pseudo-labels
    model.set_classnames(list(reversed(ID_SHAPES)))
    third = extract(model, ds_cfg, cache_dir=tmp_path)
    assert third == first and not calls
    data3 = load_feature_file(third)
    assert torch.equal(data3['feats'], data1['feats'])
    assert data3['meta']['pseudo_label_key'] != \
        data1['meta']['pseudo_label_key']
    assert data3['classnames'] == list(reversed(ID_SHAPES))
    sims = data3['feats'] @ data3['zero_shot_weights'].T
    assert torch.equal(data3['pseudo_labels'], sims.argmax(1))

    # other data => another file
    other = extract(model, shapes_cfg(num=1), cache_dir=tmp_path)
    assert other != first and sum(calls) == 6

    # other image weights => another file, encoded again
    calls.clear()
    original = model.clip.visual.conv1.weight.detach().clone()
    with torch.no_grad():
        model.clip.visual.conv1.weight.add_(0.01)
    changed = extract(model, ds_cfg, cache_dir=tmp_path)
    assert changed != first and sum(calls) == 12
    assert not torch.equal(load_feature_file(changed)['feats'],
                           data1['feats'])
    assert load_feature_file(changed)['meta']['image_encoder_sha256'] == \
        image_tower_sha256(model.clip)

    # a fixed out_file is replaced when the weights differ, reused otherwise
    fixed = tmp_path / 'fixed' / 'train.pt'
    calls.clear()
    extract(model, ds_cfg, out_file=fixed)
    extract(model, ds_cfg, out_file=fixed)
    assert sum(calls) == 12
    with torch.no_grad():
        model.clip.visual.conv1.weight.copy_(original)
    extract(model, ds_cfg, out_file=fixed)
    assert sum(calls) == 24
    assert torch.equal(load_feature_file(fixed)['feats'], data1['feats'])

    # float16 storage is another cache entry
    half = load_feature_file(extract(model, ds_cfg, cache_dir=tmp_path,
                                     dtype='float16'))
    assert half['feats'].dtype == torch.float16
    torch.testing.assert_close(half['feats'].float(), data1['feats'],
                               atol=1e-3, rtol=0)


def test_feature_file_errors_name_the_file(tmp_path):
    missing = tmp_path / 'nope.pt'
    with pytest.raises(FileNotFoundError,
                       match='nope.pt.*extract_features'):
        load_feature_file(missing)
    bad = tmp_path / 'bad.pt'
    torch.save({'feats': torch.zeros(2, 2)}, bad)
    with pytest.raises(FeatureFileError, match='bad.pt'):
        load_feature_file(bad)
    with pytest.raises(FeatureFileError, match='labels'):
        save_feature_file(tmp_path / 'x.pt', dict(
            feats=torch.zeros(3, 2), labels=torch.zeros(2, dtype=torch.long),
            sources=torch.zeros(3, dtype=torch.long), source_names=['a'],
            meta={}))


# ------------------------------------------------------------- probes
def gaussian_clusters(n_per_class, num_classes=4, dim=16, seed=0,
                      spread=0.15):
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, dim, generator=gen),
                          dim=-1)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(
        labels.numel(), dim, generator=gen)
    return F.normalize(feats, dim=-1), labels


def test_cached_feature_dataset(tmp_path):
    feats, labels = gaussian_clusters(5, num_classes=3, dim=4)
    pseudo = (labels + 1) % 3
    path = write_features(tmp_path / 'f.pt', feats.half(), labels, pseudo,
                          classnames=['a', 'b', 'c'])
    ds = CachedFeatureDataset(str(path), target='pseudo_labels')
    assert len(ds) == 15 and ds.dim == 4
    item = ds[7]
    assert item['inputs'].dtype == torch.float32
    assert torch.equal(item['inputs'], feats[7].half().float())
    assert int(item['data_samples']) == int(pseudo[7])
    assert ds.metainfo['classes'] == ('a', 'b', 'c')
    assert ds.metainfo['image_encoder_sha256'] == '0' * 64

    no_pseudo = write_features(tmp_path / 'g.pt', feats, labels)
    with pytest.raises(ValueError, match='g.pt has no pseudo_labels'):
        CachedFeatureDataset(str(no_pseudo), target='pseudo_labels')
    # OoD samples (-1) are refused unless selected away or dropped
    mixed = labels.clone()
    mixed[:5] = -1
    sources = (mixed < 0).long()
    path = write_features(tmp_path / 'h.pt', feats, mixed, sources=sources,
                          source_names=('ID', 'ood'))
    with pytest.raises(ValueError, match='5 samples'):
        CachedFeatureDataset(str(path))
    assert len(CachedFeatureDataset(str(path), sources=['ID'])) == 10
    assert len(CachedFeatureDataset(str(path), drop_unlabelled=True)) == 10
    with pytest.raises(ValueError, match='no source'):
        CachedFeatureDataset(str(path), sources=['SUN'])


def test_linear_probe_modes():
    probe = LinearProbe(in_dim=4, num_classes=3)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    logits = probe(x, mode='tensor')
    expected = F.normalize(x, dim=-1) @ probe.fc.weight.T + probe.fc.bias
    torch.testing.assert_close(logits, expected)
    # list inputs / targets (pseudo_collate) and stacked ones agree
    loss_a = probe(list(x), list(y), mode='loss')['loss']
    loss_b = probe(x, y, mode='loss')['loss']
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(loss_b, F.cross_entropy(expected, y))
    preds = probe(x, y, mode='predict')
    assert [int(p.gt_label) for p in preds] == y.tolist()
    torch.testing.assert_close(preds[2].pred_score,
                               expected[2].softmax(-1))
    with pytest.raises(ValueError, match=r'targets out of range'):
        probe(x, torch.tensor([0, 1, 2, 3, 0]), mode='loss')
    with pytest.raises(ValueError, match=r'\(B, 4\)'):
        probe(torch.randn(2, 5), mode='tensor')


def probe_runner_cfg(work_dir, train_file, val_file, in_dim, num_classes,
                     target='labels', max_epochs=8):
    cfg = Config.fromfile(PLP_DEMO)
    cfg.work_dir = str(work_dir)
    cfg.model = dict(type='LinearProbe', in_dim=in_dim,
                     num_classes=num_classes)
    cfg.train_dataloader.dataset.update(feature_file=str(train_file),
                                        target=target)
    cfg.train_dataloader.batch_size = 64
    for key in ('val_dataloader', 'test_dataloader'):
        cfg[key].dataset.feature_file = str(val_file)
    cfg.train_cfg.update(max_epochs=max_epochs, val_interval=max_epochs)
    cfg.param_scheduler[0].end = 1
    cfg.param_scheduler[1].update(begin=1, end=max_epochs)
    cfg.default_hooks.checkpoint.interval = max_epochs
    cfg.default_hooks.logger.interval = 5
    return cfg


def test_linear_probe_learns_separable_embeddings(tmp_path):
    feats, labels = gaussian_clusters(150)
    is_train = torch.arange(600) % 150 < 100  # 100 train, 50 val per class
    val_feats, val_labels = feats[~is_train], labels[~is_train]
    feats, labels = feats[is_train], labels[is_train]
    sha = 'ab' * 32
    train = write_features(tmp_path / 'train.pt', feats, labels, sha=sha)
    val = write_features(tmp_path / 'val.pt', val_feats, val_labels, sha=sha)
    runner = Runner.from_cfg(
        probe_runner_cfg(tmp_path / 'work', train, val, 16, 4))
    runner.train()
    metrics = runner.test()
    assert metrics['accuracy/top1'] >= 95.0, metrics
    # the checkpoint records which image encoder the features came from
    ckpt = torch.load(str(tmp_path / 'work' / 'epoch_8.pth'),
                      weights_only=False)
    assert ckpt['meta']['dataset_meta']['image_encoder_sha256'] == sha


# ------------------------------------------------- feature-space scores
def direct_mahalanobis(x, feats, labels, num_classes, relative=False):
    """Loops over samples and classes, float64."""
    feats, x = feats.double(), x.double()
    dim = feats.shape[1]
    means = []
    for c in range(num_classes):
        rows = [feats[i] for i in range(len(labels)) if labels[i] == c]
        means.append(sum(rows) / len(rows))
    cov = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(len(labels)):
        d = (feats[i] - means[labels[i]]).unsqueeze(1)
        cov += d @ d.T
    prec = torch.linalg.inv(cov / len(labels))
    mu0 = feats.mean(0)
    cov0 = sum((f - mu0).unsqueeze(1) @ (f - mu0).unsqueeze(0)
               for f in feats) / len(feats)
    prec0 = torch.linalg.inv(cov0)
    scores = []
    for row in x:
        dists = [float((row - m) @ prec @ (row - m)) for m in means]
        d0 = float((row - mu0) @ prec0 @ (row - mu0))
        if relative:
            dists = [d - d0 for d in dists]
        scores.append(-min(dists))
    return torch.tensor(scores), torch.stack(means), prec


@pytest.mark.parametrize('relative', [False, True])
def test_mahalanobis_matches_direct_formula(relative):
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(40, 5, generator=gen)
    labels = torch.arange(3).repeat(14)[:40]
    x = torch.randn(9, 5, generator=gen) * 2
    expected, means_ref, prec_ref = direct_mahalanobis(
        x, feats, labels, 3, relative)
    means, prec, classes = mahalanobis_fit(feats, labels, 3, chunk_size=7)
    assert classes.tolist() == [0, 1, 2]
    torch.testing.assert_close(means, means_ref)
    torch.testing.assert_close(prec, prec_ref)
    bg_mean, bg_prec = background_fit(feats, chunk_size=6)
    for chunk in (1, 4, 100):
        got = mahalanobis_score(x, means, prec, relative, bg_mean, bg_prec,
                                chunk_size=chunk)
        assert got.dtype == torch.float32 and got.shape == (9, )
        torch.testing.assert_close(got, expected.float(), rtol=1e-5,
                                   atol=1e-5)
    # half-precision features are accumulated in float64 all the same
    _, means16_ref, prec16_ref = direct_mahalanobis(
        x, feats.half(), labels, 3)
    means16, prec16, _ = mahalanobis_fit(feats.half(), labels, 3)
    torch.testing.assert_close(means16, means16_ref)
    torch.testing.assert_close(prec16, prec16_ref)


def test_mahalanobis_singular_ridge_and_empty_classes():
    gen = torch.Generator().manual_seed(0)
    # 4 samples in 6 dimensions: singular covariance, pinv keeps it finite
    feats = torch.randn(4, 6, generator=gen)
    labels = torch.tensor([0, 0, 1, 1])
    means, prec, _ = mahalanobis_fit(feats, labels)
    assert torch.isfinite(mahalanobis_score(feats, means, prec)).all()
    # ridge: precision = inv(S + ridge I)
    centred = feats.double() - means[labels]
    cov = centred.T @ centred / 4
    _, prec_r, _ = mahalanobis_fit(feats, labels, ridge=0.5)
    torch.testing.assert_close(
        prec_r, torch.linalg.inv(cov + 0.5 * torch.eye(6,
                                                         dtype=torch.float64)))
    # an empty class is an error naming it, or skipped on request
    with pytest.raises(ValueError, match=r'1 of 3 classes.*\[1\]'):
        mahalanobis_fit(feats, torch.tensor([0, 0, 2, 2]), 3)
    means_s, _, classes = mahalanobis_fit(
        feats, torch.tensor([0, 0, 2, 2]), 3, skip_empty=True)
    assert classes.tolist() == [0, 2] and means_s.shape == (2, 6)
    with pytest.raises(ValueError, match='bg_mean'):
        mahalanobis_score(feats, means, prec, relative=True)


def direct_knn(x, train, k):
    kth, mean = [], []
    for row in x:
        sims = sorted((float(row @ t) for t in train), reverse=True)
        kth.append(sims[k - 1])
        mean.append(sum(sims[:k]) / k)
    return torch.tensor(kth), torch.tensor(mean)


def test_knn_matches_direct_formula():
    gen = torch.Generator().manual_seed(1)
    train = F.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    x = F.normalize(torch.randn(7, 8, generator=gen), dim=-1)
    for k in (1, 5, 50):
        kth, mean = direct_knn(x, train, k)
        for chunk, train_chunk in ((1000, 1000), (1, 1), (3, 4), (2, 7)):
            got = knn_score(x, train, k, 'kth', chunk, train_chunk)
            torch.testing.assert_close(got, kth, atol=1e-6, rtol=0)
            got = knn_score(x, train, k, 'mean', chunk, train_chunk)
            torch.testing.assert_close(got, mean, atol=1e-6, rtol=0)
    # half-precision training rows are upcast
    torch.testing.assert_close(
        knn_score(x, train.half(), 5, 'kth', 2, 3),
        knn_score(x, train.half().float(), 5, 'kth'))
    with pytest.raises(ValueError, match='k=51 exceeds the 50'):
        knn_score(x, train, 51)
    with pytest.raises(ValueError, match='reduction'):
        knn_score(x, train, 3, 'median')


# ------------------------------------------------------------- scorers
def test_probe_scorer_matches_direct_formulas(tmp_path):
    model = tiny_classifier()
    sha = image_tower_sha256(model.clip)
    weight, bias = torch.randn(6, 64), torch.randn(6)
    work = tmp_path / 'work'
    work.mkdir()
    ckpt = work / 'epoch_3.pth'
    torch.save(
        dict(
            state_dict={'fc.weight': weight, 'fc.bias': bias},
            meta=dict(dataset_meta=dict(image_encoder_sha256=sha))), ckpt)
    (work / 'last_checkpoint').write_text(str(ckpt))
    x = F.normalize(torch.randn(5, 64), dim=-1)
    logits = (x.double() @ weight.double().T + bias.double())
    expected = dict(
        msp=logits.softmax(-1).max(-1).values,
        max_logit=logits.max(-1).values,
        energy=2.0 * torch.log(torch.exp(logits / 2.0).sum(-1)))
    for score, ref in expected.items():
        # a work dir resolves to its last checkpoint
        scorer = ProbeScorer(str(work), score=score, temperature=2.0)
        scorer.prepare(model)
        got = scorer(x, None, None)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    assert ProbeScorer(str(ckpt)).name == 'Probe-MSP'

    # a probe fitted on another encoder's features is refused
    with torch.no_grad():
        model.clip.visual.conv1.weight.add_(1.0)
    with pytest.raises(ValueError, match='another image encoder'):
        ProbeScorer(str(ckpt)).prepare(model)
    ProbeScorer(str(ckpt), check_encoder=False).prepare(model)
    with pytest.raises(ValueError, match='6 classes but the classifier '
                       'has 2'):
        ProbeScorer(str(ckpt), check_encoder=False).prepare(
            tiny_classifier(classnames=['a', 'b']))
    with pytest.raises(FileNotFoundError, match='train the probe'):
        ProbeScorer(str(tmp_path / 'missing.pth')).prepare(model)


def test_feature_scorers_load_files_and_check_encoder(tmp_path):
    model = tiny_classifier()
    sha = image_tower_sha256(model.clip)
    feats, labels = gaussian_clusters(10, num_classes=3, dim=64)
    labels[-2:] = -1  # unlabelled rows are left out of the Mahalanobis fit
    path = str(write_features(tmp_path / 'train.pt', feats, labels, sha=sha))
    x = F.normalize(torch.randn(4, 64), dim=-1)

    maha = MahalanobisScorer(path)
    maha.prepare(model)
    means, prec, _ = mahalanobis_fit(feats[:-2], labels[:-2], 3)
    torch.testing.assert_close(maha(x, None, None),
                               mahalanobis_score(x, means, prec))
    rel = MahalanobisScorer(path, relative=True)
    rel.prepare(model)
    assert rel.name == 'RelMahalanobis'
    bg_mean, bg_prec = background_fit(feats[:-2])
    torch.testing.assert_close(
        rel(x, None, None),
        mahalanobis_score(x, means, prec, True, bg_mean, bg_prec))

    knn = KNNScorer(path, k=4, reduction='mean', train_chunk_size=7)
    knn.prepare(model)
    torch.testing.assert_close(knn(x, None, None),
                               direct_knn(x, feats, 4)[1], atol=1e-6,
                               rtol=0)

    with pytest.raises(FileNotFoundError,
                       match='KNNScorer: feature file not found: .*'
                       'nope.pt; create it with tools/extract_features.py'):
        KNNScorer(str(tmp_path / 'nope.pt')).prepare(model)
    with pytest.raises(ValueError, match='no pseudo-labels'):
        MahalanobisScorer(path, labels='pseudo_labels').prepare(model)
    other = str(write_features(tmp_path / 'other.pt', feats, labels,
                               sha='1' * 64))
    with pytest.raises(ValueError, match='another image encoder'):
        KNNScorer(other).prepare(model)


# ---------------------------------------------------------- end to end
def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extraction_plan_without_feature_extraction_section():
    tool = load_tool('extract_features')
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/demo/cma_clip-tiny-rn_1xb64_shapes.py'))
    plan = tool.extraction_plan(cfg, ['test'], '/tmp/x')
    assert list(plan['splits']) == ['test']
    assert plan['splits']['test']['out_file'] is None
    assert plan['splits']['test']['cache_dir'] == '/tmp/x'
    plan = tool.extraction_plan(Config.fromfile(PLP_DEMO), None, '/tmp/y')
    assert plan['splits']['train']['out_file'] == '/tmp/y/train.pt'
    assert plan['model']['arch'] == 'tiny-rn-32px'
    with pytest.raises(KeyError, match='unknown split'):
        tool.extraction_plan(cfg, ['nope'])


def test_end_to_end_one_table(tmp_path):
    """tools/extract_features.py (in-process) -> PLP probe through the
    runner -> one OoDMetric table with NegLabel, MCM, PLP-MSP,
    Mahalanobis and kNN from the shipped demo configs."""
    tool = load_tool('extract_features')
    plp_cfg = Config.fromfile(PLP_DEMO)
    torch.manual_seed(0)
    clip_ckpt = str(tmp_path / 'clip.pth')
    torch.save({'state_dict': MODELS.build(
        plp_cfg.feature_extraction.model).state_dict()}, clip_ckpt)
    feat_dir = tmp_path / 'features'
    tool.main([
        PLP_DEMO, clip_ckpt, '--out-dir', str(feat_dir), '--cfg-options',
        'feature_extraction.splits.train.dataloader.dataset.num_per_class=20',
        'feature_extraction.splits.val.dataloader.dataset.num_per_class=5'
    ])
    train_file, val_file = feat_dir / 'train.pt', feat_dir / 'val.pt'
    train = load_feature_file(train_file)
    assert train['feats'].shape == (120, 64)
    assert train['pseudo_labels'] is not None

    cfg = probe_runner_cfg(tmp_path / 'plp', train_file, val_file, 64, 6,
                           target='pseudo_labels', max_epochs=4)
    Runner.from_cfg(cfg).train()

    cfg = Config.fromfile(BASELINES_DEMO)
    cfg.work_dir = str(tmp_path / 'test')
    cfg.load_from = clip_ckpt
    scorers = []
    for scorer in cfg.model.ood_scorers:
        if scorer.get('name') == 'LinearProbe-MSP':
            continue
        if 'train_features' in scorer:
            scorer.train_features = str(train_file)
        if 'probe_checkpoint' in scorer:
            scorer.probe_checkpoint = str(tmp_path / 'plp')
        if scorer.type == 'NegLabelScorer':
            scorer.cache_dir = False
        scorers.append(scorer)
    cfg.model.ood_scorers = scorers
    test = cfg.test_dataloader
    test.update(batch_size=64, num_workers=0)
    test.dataset.id_dataset.num_per_class = 4
    for ood in test.dataset.ood_datasets.values():
        ood.num_per_class = 4
    cfg.test_evaluator.save_plots = False  # PNGs cost seconds, no checks
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    with open(osp.join(runner.log_dir, 'ood_results.json')) as f:
        report = json.load(f)
    names = {'NegLabel', 'MCM', 'PLP-MSP', 'PLP-Energy', 'Mahalanobis',
             'kNN'}
    assert names == set(report['scores'])
    for name in names:
        for ood_set in ('unseen_shapes', 'textures', 'noise', 'mean'):
            for key, value in report['scores'][name][ood_set].items():
                assert math.isfinite(value), (name, ood_set, key)
            assert 0 <= metrics[f'ood/{name}/{ood_set}/AUROC'] <= 100


# ------------------------------------------------------------- configs
PROBE_CONFIGS = {
    'configs/plp/plp_clip-vit-b16_1xb8192_in1k.py': ('pseudo_labels', 8192),
    'configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py':
    ('labels', 8192),
    'configs/plp/plp_clip-tiny-rn_1xb256_shapes.py': ('pseudo_labels', 256),
    'configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py':
    ('labels', 256),
}


@pytest.mark.parametrize('path', sorted(PROBE_CONFIGS))
def test_probe_configs(path):
    target, batch = PROBE_CONFIGS[path]
    cfg = Config.fromfile(osp.join(REPO, path))
    probe = MODELS.build(cfg.model)
    assert isinstance(probe, LinearProbe)
    clip_model = MODELS.build(
        dict(cfg.feature_extraction.model, pretrained=None))
    # the probe fits the embeddings of the CLIP that extracts them
    assert probe.in_dim == clip_model.clip.text_projection.shape[1]
    assert probe.num_classes == (1000 if 'in1k' in path else 6)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_dataloader.dataset.target == target
    assert cfg.val_dataloader.dataset.target == 'labels'
    files = {s.out_file for s in cfg.feature_extraction.splits.values()}
    assert cfg.train_dataloader.dataset.feature_file in files
    assert cfg.val_dataloader.dataset.feature_file in files
    for split in cfg.feature_extraction.splits.values():
        assert split.dataloader.sampler.shuffle is False
    # reference schedule: 100 epochs, linear warm-up over the first 10%,
    # cosine afterwards, both stepped per iteration
    assert cfg.train_cfg.max_epochs == 100
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 10)
    assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR',
                                                       10, 100)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cosine.eta_min == 0


def test_baseline_configs_build_their_scorers():
    for path, rows in (
            (BASELINES_DEMO, {'MCM', 'NegLabel', 'PLP-MSP', 'Mahalanobis',
                              'kNN'}),
            (osp.join(REPO, 'configs/plp/'
                      'baselines_clip-vit-b16_1xb256_in1k-mos.py'),
             {'MCM', 'NegLabel', 'PLP-MSP', 'LinearProbe-MSP',
              'Mahalanobis', 'RelMahalanobis', 'kNN'})):
        cfg = Config.fromfile(path)
        cfg.model.pretrained = None
        if 'tiny' not in cfg.model.arch:
            cfg.model.arch = 'tiny-vit-32px'  # same scorers, built quickly
        model = MODELS.build(cfg.model)
        assert rows <= {s.name for s in model.ood_scorers}
