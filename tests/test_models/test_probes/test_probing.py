"""Probing baselines (issue #4) with PLP's published recipe: feature cache
of pre-projection features, PLP pseudo-labels and class names, z-scoring
with the training statistics, linear probes through MMEngine's runner,
Mahalanobis and kNN against direct (numpy) formulas, the probe/feature
scorers, the probe configs, and one OoD table end to end."""
import copy
import importlib.util
import json
import math
import os.path as osp

import clip
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets.categories import (IMAGENET_CATEGORIES,
                                            IMAGENET_SIMPLE_CATEGORIES)
from mmpretrain.registry import MODELS

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets import CachedFeatureDataset
from cma_ood.datasets.shapes import ID_SHAPES
from cma_ood.engine.feature_extractor import extract_features
from cma_ood.engine.schedulers import PLPWarmupCosineLR
from cma_ood.models import (PLP_TEMPLATES, KNNScorer, LinearProbe,
                            MahalanobisScorer, MultiModalClassifier,
                            ProbeScorer, knn_score, mahalanobis_fit,
                            mahalanobis_score, pseudo_labels)
from cma_ood.models.multimodal.clip_vision import (encode_image_features,
                                        image_feature_dim, projection_matrix)
from cma_ood.models.utils.fingerprint import image_tower_sha256
from cma_ood.models.ood_scorers.functional.feature import (
    background_fit, feature_stats, normalize_features)
from cma_ood.models.utils.prompts import resolve_classnames
from cma_ood.models.utils.zero_shot import imagenet_first_synonyms
from cma_ood.utils.feature_file import (FeatureFileError, load_feature_file,
                                        save_feature_file)

from _helpers import REPO

PLP_DEMO = osp.join(REPO, 'configs/plp/plp_clip-tiny-rn_1xb256_shapes.py')
BASELINES_DEMO = osp.join(
    REPO, 'configs/demo/baselines_clip-tiny-rn_1xb256_shapes.py')


@pytest.fixture(autouse=True)
def default_scope(single_thread):
    init_default_scope('mmpretrain')  # builds ShapesDataset by name


def tiny_classifier(seed=0, classnames=ID_SHAPES, arch='tiny-rn-32px',
                    **kwargs):
    torch.manual_seed(seed)
    return MultiModalClassifier(
        arch=arch,
        pretrained=None,
        classnames=list(classnames),
        train_template='a photo of a {}',
        test_template='a photo of a {}',
        ood_scorers=[],
        **kwargs).eval()


def perturb(model, seed=0, scale=0.02):
    """Random init of CLIP leaves biases at 0 and the ResNet's last BN at
    0: perturb every parameter so that features are not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def classifier_batch(model, images):
    """The predict-time forward: the L2-normalised image embeddings the
    classifier hands its scorers (and the tower's hooks fire)."""
    with torch.no_grad():
        return model._zero_shot_logits(images)[2]


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
                   classnames=None, sources=None, source_names=('data', ),
                   feature='pre_projection', projection=None):
    n = feats.shape[0]
    return save_feature_file(
        path,
        dict(
            feats=feats,
            projection=projection,
            labels=labels,
            sources=torch.zeros(n, dtype=torch.long)
            if sources is None else sources,
            source_names=list(source_names),
            pseudo_labels=pseudo,
            zero_shot_weights=None,
            classnames=classnames,
            meta=dict(cache_key='test', image_encoder_sha256=sha,
                      feature=feature)))


# ----------------------------------------------------------------- PLP
def test_plp_templates_are_the_reference_ensemble():
    assert PLP_TEMPLATES == ('a photo of a {}.', 'a blurry photo of a {}.',
                             'a photo of many {}.',
                             'a photo of the large {}.',
                             'a photo of the small {}.')


def ensemble_weights(model, classnames):
    """The 5-prompt zero-shot classifier, computed independently with
    clip's tokenizer and CLIP's own text forward."""
    with torch.no_grad():
        total = 0
        for template in PLP_TEMPLATES:
            tokens = clip.tokenize([template.format(c) for c in classnames],
                                   context_length=model.context_length)
            emb = model.clip.encode_text(tokens).float()
            total = total + emb / emb.norm(dim=-1, keepdim=True)
        weights = total / len(PLP_TEMPLATES)
        return weights / weights.norm(dim=-1, keepdim=True)


def encode_one_by_one(model, ds_cfg, clip_model=None):
    """CLIP's own ``encode_image`` of every image of the dataset, one at a
    time, with its labels."""
    clip_model = clip_model or model.clip
    dataset = loader_for(ds_cfg).dataset
    feats, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(
                dict(inputs=[dataset[i]['inputs']],
                     data_samples=[dataset[i]['data_samples']]), False)
            feats.append(clip_model.encode_image(batch['inputs']).float()[0])
            labels.append(int(dataset[i]['data_samples'].gt_label))
    return torch.stack(feats), labels


def test_pseudo_labels_equal_argmax_of_ensemble_classifier(tmp_path):
    model = perturb(tiny_classifier())
    ds_cfg = shapes_cfg(num=4)
    data = load_feature_file(extract(model, ds_cfg, cache_dir=tmp_path))
    weights = ensemble_weights(model, ID_SHAPES)
    # a ResNet tower has no separate projection (open_clip's proj=None
    # leaves it unchanged): its pre-projection features are the raw,
    # un-normalised embeddings
    feats, labels = encode_one_by_one(model, ds_cfg)
    assert data['meta']['feature'] == 'pre_projection'
    assert data['projection'] is None
    assert projection_matrix(model.clip.visual) is None
    assert not torch.allclose(feats.norm(dim=-1), torch.ones(len(feats)))
    torch.testing.assert_close(data['feats'], feats, atol=1e-5, rtol=1e-4)
    assert data['labels'].tolist() == labels
    torch.testing.assert_close(data['zero_shot_weights'], weights,
                               atol=1e-6, rtol=1e-5)
    sims = F.normalize(feats, dim=-1) @ weights.T
    assert data['pseudo_labels'].tolist() == sims.argmax(1).tolist()
    assert data['classnames'] == list(ID_SHAPES)
    assert data['meta']['templates'] == list(PLP_TEMPLATES)
    assert data['source_names'] == ['ShapesDataset']
    # the pure function agrees too (the argmax ignores the row lengths)
    assert torch.equal(pseudo_labels(feats, weights, chunk_size=5),
                       sims.argmax(1))


@pytest.mark.parametrize('fast', [True, False])
def test_pre_projection_features_of_a_vit(tmp_path, fast):
    """ViT: the stored features are ln_post of the class token, i.e. CLIP's
    own forward with ``proj = None`` (as PLP builds its towers), from our
    fast tower and from CLIP's forward alike; ``features @ proj`` gives back
    the embeddings, and the pseudo-labels are those of the embeddings."""
    model = perturb(tiny_classifier(arch='tiny-vit-32px',
                                    fast_image_tower=fast))
    assert model.fast_image_tower is fast
    visual = model.clip.visual
    proj = visual.proj.detach()
    assert image_feature_dim(visual, 'pre_projection') == proj.shape[0]
    assert image_feature_dim(visual, 'embedding') == proj.shape[1]
    no_proj = copy.deepcopy(model.clip)
    no_proj.visual.proj = None  # PLP: backbone.proj = None
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = no_proj.encode_image(images)
        embeds = model.clip.encode_image(images)
        for use_fast in (True, False):
            got = encode_image_features(model.clip, images, 'pre_projection',
                                        fast=use_fast)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                encode_image_features(model.clip, images, 'embedding',
                                      fast=use_fast), embeds,
                atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ref @ proj, embeds, atol=1e-5,
                                   rtol=1e-5)

    ds_cfg = shapes_cfg(num=3)
    data = load_feature_file(extract(model, ds_cfg, cache_dir=tmp_path))
    feats, labels = encode_one_by_one(model, ds_cfg, no_proj)
    assert data['meta']['feature'] == 'pre_projection'
    assert data['feats'].shape == (18, proj.shape[0])
    torch.testing.assert_close(data['feats'], feats, atol=1e-5, rtol=1e-4)
    assert torch.equal(data['projection'], proj)
    embeds, _ = encode_one_by_one(model, ds_cfg)
    torch.testing.assert_close(data['feats'] @ data['projection'], embeds,
                               atol=1e-5, rtol=1e-4)
    weights = ensemble_weights(model, ID_SHAPES)
    # PLP: normalize(pre-projection) @ proj @ text.T, then argmax
    plp = (F.normalize(feats, dim=-1) @ proj) @ weights.T
    assert data['pseudo_labels'].tolist() == plp.argmax(1).tolist()
    assert data['pseudo_labels'].tolist() == (
        F.normalize(embeds, dim=-1) @ weights.T).argmax(1).tolist()

    # the embeddings are another cache entry, of another kind
    emb = load_feature_file(extract(model, ds_cfg, cache_dir=tmp_path,
                                    feature='embedding'))
    assert emb['meta']['feature'] == 'embedding'
    assert emb['meta']['cache_key'] != data['meta']['cache_key']
    assert emb['projection'] is None
    torch.testing.assert_close(emb['feats'], embeds, atol=1e-5, rtol=1e-4)
    assert torch.equal(emb['pseudo_labels'], data['pseudo_labels'])
    with pytest.raises(ValueError, match="feature must be 'pre_projection'"):
        extract(model, ds_cfg, cache_dir=tmp_path, feature='pooled')


def test_plp_class_names_are_first_synonyms():
    names = imagenet_first_synonyms()
    assert len(names) == 1000
    assert IMAGENET_CATEGORIES[0] == 'tench, Tinca tinca'
    assert names[0] == 'tench'
    assert names[2] == 'great white shark'  # of 5 synonyms
    assert names[4] == 'hammerhead'  # simple list: 'hammerhead shark'
    assert all(n and n == n.strip() for n in names)
    # first synonyms vs mmpretrain's simplified names: 363 entries differ
    # exactly, 297 when letter case is ignored
    differ = [(a, b) for a, b in zip(names, IMAGENET_SIMPLE_CATEGORIES)
              if a != b]
    assert len(differ) == 363
    assert sum(a.lower() != b.lower() for a, b in differ) == 297
    assert resolve_classnames('imagenet_first_synonym') == names
    assert resolve_classnames(['a', 'b']) == ['a', 'b']
    assert resolve_classnames(None) is None
    with pytest.raises(KeyError, match='Unknown class-name alias'):
        resolve_classnames('imagenet_simple')
    # the ImageNet feature configs use them for the pseudo-labels
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/plp/plp_clip-vit-b16_1xb8192_in1k.py'))
    assert cfg.feature_extraction.classnames == 'imagenet_first_synonym'


def test_extraction_sets_the_pseudo_label_class_names(tmp_path):
    model = tiny_classifier()
    names = ['ring', 'box', 'wedge', 'spark', 'plus', 'blob']
    data = load_feature_file(extract(model, shapes_cfg(num=1),
                                     cache_dir=tmp_path, classnames=names))
    assert data['classnames'] == names and model.classnames == names
    weights = ensemble_weights(model, names)
    torch.testing.assert_close(data['zero_shot_weights'], weights,
                               atol=1e-6, rtol=1e-5)


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
                               atol=1e-3, rtol=1e-3)

    # so is the other feature kind (here equal values: a ResNet tower)
    calls.clear()
    emb = extract(model, ds_cfg, cache_dir=tmp_path, feature='embedding')
    assert emb != first and sum(calls) == 12
    assert load_feature_file(emb)['meta']['feature'] == 'embedding'

    # a file of the previous format (L2-normalised embeddings) is never
    # reused: it is re-extracted in place
    old = dict(torch.load(first, weights_only=True), version=1)
    old['feats'] = F.normalize(old['feats'], dim=-1)
    del old['meta']['feature']
    torch.save(old, first)
    with pytest.raises(FeatureFileError, match='format version 1'):
        load_feature_file(first)
    calls.clear()
    assert extract(model, ds_cfg, cache_dir=tmp_path) == first
    assert sum(calls) == 12
    assert torch.equal(load_feature_file(first)['feats'], data1['feats'])


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
    # the kind of features is checked and recorded (checkpoints keep it)
    assert CachedFeatureDataset(str(path), sources=['ID'],
                                feature='pre_projection').metainfo[
                                    'feature'] == 'pre_projection'
    with pytest.raises(ValueError, match='holds pre_projection features.*'
                       '--feature embedding'):
        CachedFeatureDataset(str(path), sources=['ID'], feature='embedding')
    with pytest.raises(ValueError, match='feature must be one of'):
        CachedFeatureDataset(str(path), feature='logits')


def raw_clusters(n_per_class, num_classes=4, dim=16, seed=0):
    """Gaussian clusters with per-dimension offsets and scales far from
    zero-mean / unit-variance, so that z-scoring matters."""
    gen = torch.Generator().manual_seed(seed + 100)
    feats, labels = gaussian_clusters(n_per_class, num_classes, dim, seed)
    offset = torch.randn(dim, generator=gen) * 5
    scale = torch.rand(dim, generator=gen) * 3 + 0.1
    return feats * scale + offset, labels


def test_feature_stats_are_the_unbiased_training_statistics():
    train, _ = raw_clusters(10, dim=6)
    test, _ = raw_clusters(3, dim=6, seed=1)
    mean, std = feature_stats(train.half(), chunk_size=7)
    x = train.half().double().numpy()
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), x.std(0, ddof=1), rtol=1e-6)
    # torch's default std is the unbiased one too (PLP's std.pt)
    torch.testing.assert_close(std, train.half().float().std(0))
    # test (and OoD) features are z-scored with the *training* statistics
    got = normalize_features(test, 'zscore', mean, std)
    ref = (test.double().numpy() - x.mean(0)) / x.std(0, ddof=1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got.numpy().mean(0), 0, atol=0.1)
    torch.testing.assert_close(normalize_features(test, 'l2'),
                               F.normalize(test, dim=-1))
    torch.testing.assert_close(normalize_features(test, None), test)
    with pytest.raises(ValueError, match='normalize must be'):
        normalize_features(test, 'minmax')
    with pytest.raises(ValueError, match='training mean'):
        normalize_features(test, 'zscore')
    const = train.clone()
    const[:, 2] = 1.5
    with pytest.raises(ValueError, match='1 of 6 feature dimensions are '
                       'constant'):
        feature_stats(const)


def test_linear_probe_modes(tmp_path):
    train, labels = raw_clusters(5, num_classes=3, dim=4)
    path = write_features(tmp_path / 'train.pt', train, labels)
    probe = LinearProbe(in_dim=4, num_classes=3, stats_file=str(path))
    assert probe.normalize == 'zscore'  # PLP's default
    x = torch.randn(5, 4) * 3 + 1
    y = torch.tensor([0, 1, 2, 1, 0])
    logits = probe(x, mode='tensor')
    # the training statistics, from the file, in the probe's buffers
    mean = train.double().mean(0)
    std = train.double().std(0, unbiased=True)
    torch.testing.assert_close(probe.feat_mean, mean.float())
    torch.testing.assert_close(probe.feat_std, std.float())
    expected = ((x.double() - mean) / std).float() @ probe.fc.weight.T + \
        probe.fc.bias
    torch.testing.assert_close(logits, expected)
    # list inputs / targets (pseudo_collate) and stacked ones agree
    loss_a = probe(list(x), list(y), mode='loss')['loss']
    loss_b = probe(x, y, mode='loss')['loss']
    torch.testing.assert_close(loss_a, loss_b)
    # plain cross-entropy, no label smoothing
    torch.testing.assert_close(loss_b, F.cross_entropy(expected, y))
    preds = probe(x, y, mode='predict')
    assert [int(p.gt_label) for p in preds] == y.tolist()
    torch.testing.assert_close(preds[2].pred_score,
                               expected[2].softmax(-1))
    with pytest.raises(ValueError, match=r'targets out of range'):
        probe(x, torch.tensor([0, 1, 2, 3, 0]), mode='loss')
    with pytest.raises(ValueError, match=r'\(B, 4\)'):
        probe(torch.randn(2, 5), mode='tensor')

    # the statistics travel with the checkpoint (no stats_file needed)
    state = probe.state_dict()
    assert int(state['input_norm']) == 2
    fresh = LinearProbe(in_dim=4, num_classes=3)
    with pytest.raises(RuntimeError, match='needs the training statistics'):
        fresh(x, mode='tensor')
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x, mode='tensor'), logits)
    with pytest.raises(ValueError, match="normalises its inputs with "
                       "'zscore'"):
        LinearProbe(4, 3, normalize='l2').load_state_dict(state,
                                                         strict=False)
    with pytest.raises(ValueError, match='4-d features.*in_dim=5'):
        LinearProbe(5, 3, stats_file=str(path))(torch.randn(2, 5),
                                                mode='tensor')

    # the other normalisations stay available
    l2 = LinearProbe(in_dim=4, num_classes=3, normalize='l2')
    torch.testing.assert_close(
        l2(x, mode='tensor'),
        F.normalize(x, dim=-1) @ l2.fc.weight.T + l2.fc.bias)
    raw = LinearProbe(in_dim=4, num_classes=3, normalize=None)
    torch.testing.assert_close(raw(x, mode='tensor'),
                               x @ raw.fc.weight.T + raw.fc.bias)
    assert 'feat_mean' not in raw.state_dict()
    with pytest.raises(ValueError, match="normalize must be 'zscore', 'l2' "
                       'or None'):
        LinearProbe(4, 3, normalize='batchnorm')


def probe_runner_cfg(work_dir, train_file, val_file, in_dim, num_classes,
                     target='labels', max_epochs=8, batch_size=64,
                     lr=None):
    cfg = Config.fromfile(PLP_DEMO)
    cfg.work_dir = str(work_dir)
    cfg.model = dict(type='LinearProbe', in_dim=in_dim,
                     num_classes=num_classes, stats_file=str(train_file))
    cfg.train_dataloader.dataset.update(feature_file=str(train_file),
                                        target=target)
    cfg.train_dataloader.batch_size = batch_size
    for key in ('val_dataloader', 'test_dataloader'):
        cfg[key].dataset.feature_file = str(val_file)
    cfg.train_cfg.update(max_epochs=max_epochs, val_interval=max_epochs)
    # PLP's schedule over the shortened run; lr by the batch / 256 rule
    # unless given
    cfg.param_scheduler[0].end = max_epochs
    cfg.optim_wrapper.optimizer.lr = lr or 1e-3 * batch_size / 256
    cfg.default_hooks.checkpoint.interval = max_epochs
    cfg.default_hooks.logger.interval = 5
    return cfg


def test_linear_probe_learns_separable_features(tmp_path):
    feats, labels = raw_clusters(150)
    is_train = torch.arange(600) % 150 < 100  # 100 train, 50 val per class
    val_feats, val_labels = feats[~is_train], labels[~is_train]
    feats, labels = feats[is_train], labels[is_train]
    sha = 'ab' * 32
    train = write_features(tmp_path / 'train.pt', feats, labels, sha=sha)
    val = write_features(tmp_path / 'val.pt', val_feats, val_labels, sha=sha)
    # the config's Adam (weight decay 1e-3) and PLP schedule; on 400
    # samples the rule's lr (1e-3 * 32 / 256) would need hundreds of
    # epochs, so this short run uses 1e-2
    runner = Runner.from_cfg(
        probe_runner_cfg(tmp_path / 'work', train, val, 16, 4,
                         max_epochs=20, batch_size=32, lr=1e-2))
    runner.train()
    # the training loss went down (PLP's Adam, warm-up and cosine)
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 20 * math.ceil(400 / 32)
    assert losses[-13:].mean() < 0.5 * losses[:13].mean(), losses
    metrics = runner.test()
    assert metrics['accuracy/top1'] >= 95.0, metrics
    ckpt = torch.load(str(tmp_path / 'work' / 'epoch_20.pth'),
                      weights_only=False)
    # the checkpoint records which image encoder and kind of features the
    # probe was trained on, and the training statistics
    meta = ckpt['meta']['dataset_meta']
    assert meta['image_encoder_sha256'] == sha
    assert meta['feature'] == 'pre_projection'
    torch.testing.assert_close(ckpt['state_dict']['feat_mean'],
                               feats.mean(0))
    torch.testing.assert_close(ckpt['state_dict']['feat_std'], feats.std(0))


# ------------------------------------------------- feature-space scores
def numpy_mahalanobis(x, feats, labels, relative=False):
    """PLP's Mahalanobis in numpy: class means, the mean of the per-class
    ``np.cov(ddof=1)``, ``inv``; the relative score subtracts the distance
    to the global mean under the global unbiased covariance. Classes with
    fewer than 2 samples are left out (as PLP)."""
    X, x = feats.double().numpy(), x.double().numpy()
    labels = labels.numpy()
    classes = [c for c in np.unique(labels) if (labels == c).sum() > 1]
    means = np.stack([X[labels == c].mean(0) for c in classes])
    cov = np.mean([np.cov(X[labels == c], rowvar=False, ddof=1)
                   for c in classes], axis=0)
    prec = np.linalg.inv(cov)
    mu0 = X.mean(0)
    prec0 = np.linalg.inv(np.cov(X, rowvar=False, ddof=1))
    scores = []
    for row in x:
        dists = np.array([(row - m) @ prec @ (row - m) for m in means])
        if relative:
            dists = dists - (row - mu0) @ prec0 @ (row - mu0)
        scores.append(-dists.min())
    return np.array(scores), means, prec, np.array(classes)


def direct_pooled_mahalanobis(x, feats, labels, num_classes):
    """The pooled (tied maximum-likelihood, / N) alternative, in loops."""
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
    scores = [-min(float((row - m) @ prec @ (row - m)) for m in means)
              for row in x]
    return torch.tensor(scores), torch.stack(means), prec


# unequal class sizes tell the mean of the class covariances from the
# pooled one; class 3 has a single sample (left out, as PLP)
MAHA_LABELS = torch.tensor([0] * 6 + [1] * 14 + [2] * 25 + [3])


@pytest.mark.parametrize('relative', [False, True])
def test_mahalanobis_matches_numpy(relative):
    gen = torch.Generator().manual_seed(3)
    labels = MAHA_LABELS
    scale = torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0])
    feats = torch.randn(len(labels), 5, generator=gen) * scale + \
        labels.unsqueeze(1).float() * torch.randn(5, generator=gen)
    x = torch.randn(9, 5, generator=gen) * 2
    expected, means_ref, prec_ref, classes_ref = numpy_mahalanobis(
        x, feats, labels, relative)
    with pytest.raises(ValueError, match='1 of 4 classes have fewer than 2'):
        mahalanobis_fit(feats, labels, 4)
    means, prec, classes = mahalanobis_fit(feats, labels, 4, chunk_size=7,
                                           skip_empty=True)
    assert classes.tolist() == classes_ref.tolist() == [0, 1, 2]
    np.testing.assert_allclose(means.numpy(), means_ref, rtol=1e-12)
    np.testing.assert_allclose(prec.numpy(), prec_ref, rtol=1e-9,
                               atol=1e-12)
    # the shared covariance is the mean of the per-class unbiased ones
    np.testing.assert_allclose(
        torch.linalg.inv(prec).numpy(),
        np.mean([np.cov(feats[labels == c].double().numpy(), rowvar=False,
                        ddof=1) for c in range(3)], axis=0), rtol=1e-9)
    bg_mean, bg_prec = background_fit(feats, chunk_size=6)
    np.testing.assert_allclose(
        torch.linalg.inv(bg_prec).numpy(),
        np.cov(feats.double().numpy(), rowvar=False, ddof=1), rtol=1e-9)
    for chunk in (1, 4, 100):
        got = mahalanobis_score(x, means, prec, relative, bg_mean, bg_prec,
                                chunk_size=chunk)
        assert got.dtype == torch.float32 and got.shape == (9, )
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5,
                                   atol=1e-5)
    # higher = more ID: training points score above far-away ones
    far = feats[:5] + 100
    assert (mahalanobis_score(feats[:5], means, prec) >
            mahalanobis_score(far, means, prec)).all()
    # half-precision features are accumulated in float64 all the same
    _, means16_ref, prec16_ref, _ = numpy_mahalanobis(
        x, feats.half(), labels)
    means16, prec16, _ = mahalanobis_fit(feats.half(), labels, 4,
                                         skip_empty=True)
    np.testing.assert_allclose(means16.numpy(), means16_ref, rtol=1e-12)
    np.testing.assert_allclose(prec16.numpy(), prec16_ref, rtol=1e-9,
                               atol=1e-12)


def test_mahalanobis_pooled_option_matches_direct_formula():
    gen = torch.Generator().manual_seed(3)
    labels = MAHA_LABELS[:-1]
    feats = torch.randn(len(labels), 5, generator=gen)
    x = torch.randn(9, 5, generator=gen) * 2
    expected, means_ref, prec_ref = direct_pooled_mahalanobis(
        x, feats, labels, 3)
    for inverse in ('inv', 'pinv'):
        means, prec, _ = mahalanobis_fit(feats, labels, 3, chunk_size=7,
                                         covariance='pooled',
                                         inverse=inverse)
        torch.testing.assert_close(means, means_ref)
        torch.testing.assert_close(prec, prec_ref)
        torch.testing.assert_close(mahalanobis_score(x, means, prec),
                                   expected.float(), rtol=1e-5, atol=1e-5)
    _, class_mean_prec, _ = mahalanobis_fit(feats, labels, 3)
    assert not torch.allclose(class_mean_prec, prec_ref)
    # the pooled background covariance divides by N
    _, bg_prec = background_fit(feats, covariance='pooled')
    centred = feats.double() - feats.double().mean(0)
    torch.testing.assert_close(
        bg_prec, torch.linalg.inv(centred.T @ centred / len(feats)))
    with pytest.raises(ValueError, match='covariance must be one of'):
        mahalanobis_fit(feats, labels, covariance='diagonal')
    with pytest.raises(ValueError, match='inverse must be one of'):
        mahalanobis_fit(feats, labels, inverse='solve')


def test_mahalanobis_singular_ridge_and_empty_classes():
    gen = torch.Generator().manual_seed(0)
    # 4 samples in 6 dimensions: a singular covariance. PLP's inv fails
    # (here with a clear error); pinv keeps the distance finite
    feats = torch.randn(4, 6, generator=gen)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="singular.*inverse='pinv'"):
        mahalanobis_fit(feats, labels)
    means, prec, _ = mahalanobis_fit(feats, labels, inverse='pinv')
    assert torch.isfinite(mahalanobis_score(feats, means, prec)).all()
    # ridge: precision = inv(S + ridge I), S the mean class covariance
    centred = feats.double() - means[labels]
    cov = (centred[:2].T @ centred[:2] + centred[2:].T @ centred[2:]) / 2
    _, prec_r, _ = mahalanobis_fit(feats, labels, ridge=0.5)
    torch.testing.assert_close(
        prec_r, torch.linalg.inv(cov + 0.5 * torch.eye(6,
                                                         dtype=torch.float64)))
    # an empty class is an error naming it, or skipped on request
    with pytest.raises(ValueError, match=r'1 of 3 classes.*\[1\]'):
        mahalanobis_fit(feats, torch.tensor([0, 0, 2, 2]), 3,
                        inverse='pinv')
    means_s, _, classes = mahalanobis_fit(
        feats, torch.tensor([0, 0, 2, 2]), 3, skip_empty=True,
        inverse='pinv')
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


def test_knn_k1_is_the_max_cosine_similarity():
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(40, 8, generator=gen) * 3 + 1
    x = torch.randn(6, 8, generator=gen) * 3 + 1
    xn, tn = x.double().numpy(), train.double().numpy()
    cos = (xn / np.linalg.norm(xn, axis=1, keepdims=True)) @ \
        (tn / np.linalg.norm(tn, axis=1, keepdims=True)).T
    got = knn_score(F.normalize(x, dim=-1), F.normalize(train, dim=-1))
    np.testing.assert_allclose(got.numpy(), cos.max(1), atol=1e-6)
    for reduction in ('kth', 'mean'):  # the same for k = 1
        np.testing.assert_allclose(
            knn_score(F.normalize(x, dim=-1), F.normalize(train, dim=-1), 1,
                      reduction, 2, 3).numpy(), cos.max(1), atol=1e-6)


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
def save_probe(path, weight, bias, sha, feature='pre_projection',
               mean=None, std=None):
    """A probe checkpoint as tools/train.py writes it (z-score probe when
    mean/std are given, else one of the earlier, L2-normalising kind
    without input_norm / feature)."""
    state = {'fc.weight': weight, 'fc.bias': bias}
    dataset_meta = dict(image_encoder_sha256=sha)
    if mean is not None:
        state.update(input_norm=torch.tensor(2), feat_mean=mean,
                     feat_std=std)
        dataset_meta['feature'] = feature
    torch.save(dict(state_dict=state, meta=dict(dataset_meta=dataset_meta)),
               path)
    return path


def expected_probe_scores(logits):
    logits = logits.double()
    return dict(
        msp=logits.softmax(-1).max(-1).values,
        max_logit=logits.max(-1).values,
        energy=2.0 * torch.log(torch.exp(logits / 2.0).sum(-1)),
        l1_norm=(logits - logits.min(-1, keepdim=True).values).sum(-1))


def test_probe_scorer_matches_direct_formulas(tmp_path):
    model = perturb(tiny_classifier())
    sha = image_tower_sha256(model.clip)
    weight, bias = torch.randn(6, 64), torch.randn(6)
    mean, std = torch.randn(64), torch.rand(64) + 0.5
    work = tmp_path / 'work'
    work.mkdir()
    ckpt = save_probe(work / 'epoch_3.pth', weight, bias, sha, mean=mean,
                      std=std)
    (work / 'last_checkpoint').write_text(str(ckpt))
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        raw = model.clip.encode_image(images).double()  # pre-projection
    # PLP: z-score with the probe's training statistics, then the layer
    logits = ((raw - mean.double()) / std.double()) @ weight.double().T + \
        bias.double()
    for score, ref in expected_probe_scores(logits).items():
        # a work dir resolves to its last checkpoint
        scorer = ProbeScorer(str(work), score=score, temperature=2.0)
        scorer.prepare(model.scorer_context())
        assert (scorer.normalize, scorer.feature) == ('zscore',
                                                      'pre_projection')
        got = scorer(classifier_batch(model, images), None, None)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    assert ProbeScorer(str(ckpt)).name == 'Probe-MSP'
    assert ProbeScorer(str(ckpt), score='l1_norm').name == 'Probe-L1Norm'

    # the features must come from this batch's forward
    scorer = ProbeScorer(str(ckpt))
    scorer.prepare(model.scorer_context())
    embeds = classifier_batch(model, images)
    scorer(embeds, None, None)
    with pytest.raises(RuntimeError, match='were not captured'):
        scorer(embeds, None, None)  # no new forward
    classifier_batch(model, images)
    with pytest.raises(RuntimeError, match='do not belong'):
        scorer(F.normalize(torch.randn(5, 64), dim=-1), None, None)

    # a probe of the earlier kind: L2-normalised embeddings
    legacy = save_probe(tmp_path / 'legacy.pth', weight, bias, sha)
    scorer = ProbeScorer(str(legacy), score='energy', temperature=2.0)
    scorer.prepare(model.scorer_context())
    assert (scorer.normalize, scorer.feature) == ('l2', 'embedding')
    x = F.normalize(torch.randn(5, 64), dim=-1)  # used as they are
    logits = x.double() @ weight.double().T + bias.double()
    torch.testing.assert_close(scorer(x, None, None).double(),
                               expected_probe_scores(logits)['energy'],
                               rtol=1e-5, atol=1e-5)

    # a probe fitted on another encoder's features is refused
    with torch.no_grad():
        model.clip.visual.conv1.weight.add_(1.0)
    with pytest.raises(ValueError, match='another image encoder'):
        ProbeScorer(str(ckpt)).prepare(model.scorer_context())
    ProbeScorer(str(ckpt), check_encoder=False).prepare(model.scorer_context())
    with pytest.raises(ValueError, match='6 classes but the classifier '
                       'has 2'):
        ProbeScorer(str(ckpt), check_encoder=False).prepare(
            tiny_classifier(classnames=["a", "b"]).scorer_context())
    with pytest.raises(FileNotFoundError, match='train the probe'):
        ProbeScorer(str(tmp_path / 'missing.pth')).prepare(model.scorer_context())
    with pytest.raises(ValueError, match='score must be one of'):
        ProbeScorer(str(ckpt), score='entropy')


def test_probe_scorer_on_vit_pre_projection_features(tmp_path):
    """A ViT classifier (fast tower): the probe sees ln_post of the class
    token, the features before the projection, as in training."""
    model = perturb(tiny_classifier(arch='tiny-vit-32px'))
    assert model.fast_image_tower
    no_proj = copy.deepcopy(model.clip)
    no_proj.visual.proj = None
    weight, bias = torch.randn(6, 64), torch.randn(6)
    mean, std = torch.randn(64), torch.rand(64) + 0.5
    ckpt = save_probe(tmp_path / 'p.pth', weight, bias,
                      image_tower_sha256(model.clip), mean=mean, std=std)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        pre = no_proj.encode_image(images).double()
    logits = ((pre - mean.double()) / std.double()) @ weight.double().T + \
        bias.double()
    scorer = ProbeScorer(str(ckpt), score='energy', temperature=2.0)
    scorer.prepare(model.scorer_context())
    torch.testing.assert_close(
        scorer(classifier_batch(model, images), None, None).double(),
        expected_probe_scores(logits)['energy'], rtol=1e-4, atol=1e-4)
    # a probe on the 64-d embeddings of this tower would also fit; a 32-d
    # one fits neither
    bad = save_probe(tmp_path / 'bad.pth', torch.randn(6, 32), bias,
                     image_tower_sha256(model.clip), mean=mean[:32],
                     std=std[:32])
    with pytest.raises(ValueError, match='takes 32-d inputs'):
        ProbeScorer(str(bad)).prepare(model.scorer_context())


def test_feature_scorers_load_files_and_check_encoder(tmp_path):
    model = perturb(tiny_classifier())
    sha = image_tower_sha256(model.clip)
    feats, labels = raw_clusters(40, num_classes=3, dim=64)
    labels[-2:] = -1  # unlabelled rows are left out of the Mahalanobis fit
    path = str(write_features(tmp_path / 'train.pt', feats, labels, sha=sha))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        x = model.clip.encode_image(images)  # raw pre-projection features

    # PLP's defaults: raw features, mean class covariance, inv
    maha = MahalanobisScorer(path)
    maha.prepare(model.scorer_context())
    means, prec, _ = mahalanobis_fit(feats[:-2], labels[:-2], 3)
    torch.testing.assert_close(maha(classifier_batch(model, images), None,
                                    None),
                               mahalanobis_score(x, means, prec))
    ref, *_ = numpy_mahalanobis(x, feats[:-2], labels[:-2])
    np.testing.assert_allclose(
        maha(classifier_batch(model, images), None, None).numpy(), ref,
        rtol=1e-4)
    rel = MahalanobisScorer(path, relative=True)
    rel.prepare(model.scorer_context())
    assert rel.name == 'RelMahalanobis'
    ref, *_ = numpy_mahalanobis(x, feats[:-2], labels[:-2], relative=True)
    np.testing.assert_allclose(
        rel(classifier_batch(model, images), None, None).numpy(), ref,
        rtol=1e-4, atol=1e-3)
    # z-scoring does not change the Mahalanobis distance
    zs = MahalanobisScorer(path, normalize='zscore')
    zs.prepare(model.scorer_context())
    torch.testing.assert_close(
        zs(classifier_batch(model, images), None, None),
        maha(classifier_batch(model, images), None, None), rtol=1e-4,
        atol=1e-3)
    # the earlier choices stay available: L2-normalised, pooled, pinv
    old = MahalanobisScorer(path, normalize='l2', covariance='pooled',
                            inverse='pinv')
    old.prepare(model.scorer_context())
    xn = F.normalize(x, dim=-1)
    means_o, prec_o, _ = mahalanobis_fit(
        F.normalize(feats[:-2], dim=-1), labels[:-2], 3,
        covariance='pooled', inverse='pinv')
    torch.testing.assert_close(old(classifier_batch(model, images), None,
                                   None),
                               mahalanobis_score(xn, means_o, prec_o))

    # kNN, PLP's k = 1: the max cosine similarity to the training features
    knn = KNNScorer(path, train_chunk_size=7)
    assert knn.k == 1
    knn.prepare(model.scorer_context())
    cos = F.normalize(x.double(), dim=-1) @ F.normalize(feats.double(),
                                                        dim=-1).T
    torch.testing.assert_close(
        knn(classifier_batch(model, images), None, None).double(),
        cos.max(1).values, atol=1e-6, rtol=0)
    knn4 = KNNScorer(path, k=4, reduction='mean', train_chunk_size=7)
    knn4.prepare(model.scorer_context())
    torch.testing.assert_close(
        knn4(classifier_batch(model, images), None, None),
        direct_knn(F.normalize(x, dim=-1), F.normalize(feats, dim=-1), 4)[1],
        atol=1e-6, rtol=0)
    # z-scored with the training statistics before the cosine
    knnz = KNNScorer(path, normalize='zscore')
    knnz.prepare(model.scorer_context())
    m = feats.double().mean(0)
    sd = feats.double().std(0)
    cos_z = F.normalize((x.double() - m) / sd, dim=-1) @ F.normalize(
        (feats.double() - m) / sd, dim=-1).T
    torch.testing.assert_close(
        knnz(classifier_batch(model, images), None, None).double(),
        cos_z.max(1).values, atol=1e-5, rtol=0)

    with pytest.raises(FileNotFoundError,
                       match='KNNScorer: feature file not found: .*'
                       'nope.pt; create it with tools/extract_features.py'):
        KNNScorer(str(tmp_path / 'nope.pt')).prepare(model.scorer_context())
    with pytest.raises(ValueError, match='no pseudo-labels'):
        MahalanobisScorer(path, labels='pseudo_labels').prepare(model.scorer_context())
    other = str(write_features(tmp_path / 'other.pt', feats, labels,
                               sha='1' * 64))
    with pytest.raises(ValueError, match='another image encoder'):
        KNNScorer(other).prepare(model.scorer_context())
    with pytest.raises(ValueError, match='expects embedding'):
        KNNScorer(path, feature='embedding').prepare(model.scorer_context())
    narrow = str(write_features(tmp_path / 'narrow.pt', feats[:, :8],
                                labels, sha=sha))
    with pytest.raises(ValueError, match='8-d features.*64-d'):
        MahalanobisScorer(narrow).prepare(model.scorer_context())
    with pytest.raises(ValueError, match='normalize must be'):
        KNNScorer(path, normalize='unit')
    with pytest.raises(ValueError, match='covariance must be one of'):
        MahalanobisScorer(path, covariance='full')
    with pytest.raises(ValueError, match='k must be a positive int'):
        KNNScorer(path, k=0)


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
    assert plan['feature'] == 'pre_projection'  # PLP's, the default
    assert plan['classnames'] is None
    with pytest.raises(KeyError, match='unknown split'):
        tool.extraction_plan(cfg, ['nope'])
    bad = Config.fromfile(PLP_DEMO)
    bad.feature_extraction.feature = 'logits'
    with pytest.raises(ValueError, match='feature_extraction.feature'):
        tool.extraction_plan(bad)


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


def plp_lr_schedule(base_lr, total_iters, warmup_fraction=0.1):
    """PLP's cosine_scheduler_iter(base, 0, T, 0.1, 0), written out: a
    linspace from 0 to base over int(0.1 T) iterations, then
    base / 2 * (1 + cos(pi * i / (T - W))) for i = 0 .. T - W - 1."""
    warmup = int(total_iters * warmup_fraction)
    ramp = np.linspace(0, base_lr, warmup)
    i = np.arange(total_iters - warmup)
    cosine = 0.5 * base_lr * (1 + np.cos(np.pi * i / len(i)))
    return np.concatenate([ramp, cosine])


@pytest.mark.parametrize('path', sorted(PROBE_CONFIGS))
def test_probe_configs(path):
    target, batch = PROBE_CONFIGS[path]
    cfg = Config.fromfile(osp.join(REPO, path))
    probe = MODELS.build(cfg.model)
    assert isinstance(probe, LinearProbe)
    clip_model = MODELS.build(
        dict(cfg.feature_extraction.model, pretrained=None))
    # PLP's features: the tower output before the projection (768-d for
    # ViT-B/16, the embedding for the tiny ResNet), z-scored with the
    # statistics of the training feature file
    assert cfg.feature_extraction.feature == 'pre_projection'
    assert probe.in_dim == image_feature_dim(clip_model.clip.visual,
                                             'pre_projection')
    assert probe.in_dim == (768 if 'in1k' in path else 64)
    assert probe.normalize == 'zscore'
    assert probe.stats_file == cfg.train_dataloader.dataset.feature_file
    assert cfg.train_dataloader.dataset.feature == 'pre_projection'
    assert probe.num_classes == (1000 if 'in1k' in path else 6)
    # plain cross-entropy (mmpretrain's, no label smoothing)
    assert type(probe.loss_module).__name__ == 'CrossEntropyLoss'
    assert not probe.loss_module.use_soft
    # PLP's train loader: shuffled, last partial batch kept
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_dataloader.sampler.shuffle is True
    assert cfg.train_dataloader.get('drop_last', False) is False
    assert cfg.train_dataloader.dataset.target == target
    assert cfg.val_dataloader.dataset.target == 'labels'
    files = {s.out_file for s in cfg.feature_extraction.splits.values()}
    assert cfg.train_dataloader.dataset.feature_file in files
    assert cfg.val_dataloader.dataset.feature_file in files
    for split in cfg.feature_extraction.splits.values():
        assert split.dataloader.sampler.shuffle is False

    # Adam (coupled L2 weight decay, not AdamW), lr = 1e-3 * batch / 256
    init_default_scope('mmpretrain')
    wrapper = build_optim_wrapper(probe, cfg.optim_wrapper)
    optimizer = wrapper.optimizer
    assert type(optimizer) is torch.optim.Adam
    assert not optimizer.defaults.get('decoupled_weight_decay', False)
    assert optimizer.defaults['lr'] == pytest.approx(1e-3 * batch / 256,
                                                     rel=1e-12)
    assert optimizer.defaults['weight_decay'] == 1e-3
    assert cfg.auto_scale_lr.base_batch_size == batch

    # PLP's cosine_scheduler_iter over 100 epochs of ceil(N / batch)
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.param_scheduler == [
        dict(type='PLPWarmupCosineLR', warmup_ratio=0.1, by_epoch=True,
             begin=0, end=100, convert_to_iter_based=True)]
    num = 1281167 if 'in1k' in path else 6 * 400
    epoch_length = math.ceil(num / batch)  # 157 on ImageNet
    sched_cfg = dict(cfg.param_scheduler[0])
    sched_cfg.pop('type')
    sched_cfg.pop('convert_to_iter_based')
    sched = PLPWarmupCosineLR.build_iter_from_epoch(
        optimizer, epoch_length=epoch_length, **sched_cfg)
    total = 100 * epoch_length
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()  # no gradients: a no-op, keeps the call order
        sched.step()
    np.testing.assert_allclose(lrs, plp_lr_schedule(1e-3 * batch / 256,
                                                    total),
                               rtol=1e-9, atol=1e-15)


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
        scorers = {s.name: s for s in model.ood_scorers}
        assert rows <= set(scorers)
        # PLP's feature-space settings
        assert scorers['kNN'].k == 1
        assert scorers['kNN'].normalize is None
        maha = scorers['Mahalanobis']
        assert (maha.covariance, maha.inverse, maha.normalize) == (
            'class_mean', 'inv', None)
        for name in ('PLP-MSP', 'PLP-Energy'):
            assert scorers[name].temperature == 1.0
