"""The feature cache with a non-CLIP backbone (FeatureBackbone, issue 16):
extracted features against the libraries' own forwards, the cache key
(fingerprint, kind), no pseudo-labels (a clear error where a config asks
for them), and, for a tiny timm ViT and a tiny mmpretrain ResNet, the whole
chain from the shipped CPU configs -- tools/extract_features.py -> a
LinearProbe through MMEngine's runner -> one OoD table -- with the table's
scores checked against direct formulas on independently computed
features."""
import copy
import importlib.util
import math
import os.path as osp

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from safetensors.torch import save_file

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets import CachedFeatureDataset
from cma_ood.engine.feature_extractor import (extract_features,
                                              feature_source,
                                              supports_pseudo_labels)
from cma_ood.models import FeatureBackbone, MultiModalClassifier
from cma_ood.datasets.shapes import ID_SHAPES
from cma_ood.utils.feature_file import load_feature_file

from _helpers import REPO

pytestmark = pytest.mark.usefixtures('single_thread')

PROBE_CFG = osp.join(
    REPO, 'configs/linear-probe/linear-probe_vit-tiny-timm_1xb256_shapes.py')
TABLE_CFG = osp.join(
    REPO, 'configs/linear-probe/baselines_vit-tiny-timm_1xb256_shapes.py')
TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48,
                num_heads=2)
RESNET = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=6, in_channels=64))


@pytest.fixture(autouse=True)
def default_scope():
    init_default_scope('mmpretrain')  # builds ShapesDataset by name


def shapes(split='train', num=2, pipeline=None):
    return dict(type='ShapesDataset', split=split, num_per_class=num,
                img_size=32, test_mode=True,
                pipeline=pipeline or [dict(type='PackInputs')])


def loader_for(dataset_cfg, batch_size=5):
    return Runner.build_dataloader(dict(
        batch_size=batch_size, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset_cfg))


def timm_ref(num_classes=0, seed=0):
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', pretrained=False,
                             num_classes=num_classes, **TINY_VIT).eval()


def normalised_images(dataset_cfg, mean, std):
    """The dataset's images as the backbone sees them, computed here: BGR
    -> RGB, ``(x - mean) / std`` per channel."""
    dataset = loader_for(dataset_cfg).dataset
    imgs, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        imgs.append(item['inputs'].flip(0).float())
        labels.append(int(item['data_samples'].gt_label))
    x = torch.stack(imgs)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean) / std, labels


def test_extract_features_of_a_timm_backbone(tmp_path, monkeypatch):
    model = FeatureBackbone(source='timm', model_name='vit_tiny_patch16_224',
                            model_kwargs=dict(TINY_VIT, num_classes=5))
    assert not supports_pseudo_labels(model)
    ref = timm_ref(num_classes=5)
    ref.load_state_dict(model.net.state_dict())
    ds_cfg = shapes()
    calls = []
    encode = model.encode_features

    def spy(images, feature):
        calls.append(images.shape[0])
        return encode(images, feature)

    monkeypatch.setattr(model, 'encode_features', spy)
    kw = dict(dataset_cfg=ds_cfg, cache_dir=tmp_path, show_progress=False)
    path = extract_features(model, loader_for(ds_cfg), **kw)
    data = load_feature_file(path)
    x, labels = normalised_images(ds_cfg, [127.5] * 3, [127.5] * 3)
    with torch.no_grad():
        pre = ref.forward_head(ref.forward_features(x), pre_logits=True)
        logits = ref(x)
    torch.testing.assert_close(data['feats'], pre, atol=1e-5, rtol=1e-4)
    assert data['labels'].tolist() == labels
    assert data['meta']['feature'] == 'pre_projection'  # the pre-logits
    assert data['meta']['image_encoder_sha256'] == model.image_fingerprint()
    assert data['meta']['arch'] == 'timm:vit_tiny_patch16_224'
    assert data['projection'] is None
    assert data['pseudo_labels'] is None and data['classnames'] is None
    assert 'CLIP' in data['meta']['no_pseudo_labels']
    assert sum(calls) == 12
    # reused without encoding; another kind (the logits) is another file
    assert extract_features(model, loader_for(ds_cfg), **kw) == path
    assert sum(calls) == 12
    emb = load_feature_file(extract_features(
        model, loader_for(ds_cfg), feature='embedding', **kw))
    torch.testing.assert_close(emb['feats'], logits, atol=1e-5, rtol=1e-4)
    assert sum(calls) == 24
    # other weights: re-encoded
    with torch.no_grad():
        model.net.head.bias.add_(1.0)
    assert extract_features(model, loader_for(ds_cfg), **kw) != path
    assert sum(calls) == 36


def test_pseudo_labels_need_a_clip_model(tmp_path):
    model = FeatureBackbone(source='mmpretrain', model=RESNET,
                            input_size=32)
    ds_cfg = shapes(num=1)
    with pytest.raises(ValueError, match='no text tower'):
        extract_features(model, loader_for(ds_cfg), dataset_cfg=ds_cfg,
                         cache_dir=tmp_path, classnames=['a'] * 6,
                         show_progress=False)
    path = extract_features(model, loader_for(ds_cfg), dataset_cfg=ds_cfg,
                            cache_dir=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match='need a CLIP model'):
        CachedFeatureDataset(path, target='pseudo_labels')
    assert len(CachedFeatureDataset(path, target='labels')) == 6
    # a config asking for them: the tool stops before encoding
    tool = load_tool('extract_features')
    with pytest.raises(ValueError, match='no text tower'):
        tool.main([PROBE_CFG, '--out-dir', str(tmp_path / 'x'),
                   '--cfg-options',
                   'feature_extraction.classnames=imagenet_first_synonym'])
    assert not (tmp_path / 'x').exists()
    with pytest.raises(TypeError, match='FeatureBackbone'):
        feature_source(torch.nn.Linear(2, 2))
    clip = MultiModalClassifier(arch='tiny-rn-32px', pretrained=None,
                                classnames=['a'], ood_scorers=[])
    assert supports_pseudo_labels(clip)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIPPED = {
    # probe config: its OoD-table config
    'linear-probe_vit-tiny-timm_1xb256_shapes':
    'baselines_vit-tiny-timm_1xb256_shapes',
    'linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k':
    'baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos',
    'linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k':
    'baselines_vit-base-p16-in21k-timm-plp_1xb256_in1k-mos',
}


@pytest.mark.parametrize('probe_name', sorted(SHIPPED))
def test_shipped_configs_test_what_they_extract(probe_name):
    """Each OoD-table config scores with the backbone (weights, feature,
    preprocessing) that its probe config extracts with, on that config's
    training features and probe."""
    root = osp.join(REPO, 'configs/linear-probe')
    probe = Config.fromfile(osp.join(root, probe_name + '.py'))
    table = Config.fromfile(osp.join(root, SHIPPED[probe_name] + '.py'))
    backbone = dict(table.model)
    scorers = backbone.pop('ood_scorers')
    assert backbone == dict(probe.feature_extraction.model)
    train = probe.feature_extraction.splits.train
    for split in probe.feature_extraction.splits.values():
        assert split.dataloader.dataset.pipeline == \
            table.test_dataloader.dataset.get(
                'pipeline', table.test_dataloader.dataset.id_dataset.get(
                    'pipeline'))
    assert probe.train_dataloader.dataset.target == 'labels'
    assert probe.feature_extraction.get('classnames') is None
    for scorer in scorers:
        if 'train_features' in scorer:
            assert scorer.train_features == train.out_file
        if 'probe_checkpoint' in scorer:
            assert scorer.probe_checkpoint == f'work_dirs/{probe_name}'


# ------------------------------------------------------------ end to end
def backbone_weights(kind, tmp_path):
    """``(weights file, FeatureBackbone config, reference model, its
    features (images) -> (B, D))`` for the tiny timm ViT or the tiny
    mmpretrain ResNet."""
    if kind == 'timm':
        ref = timm_ref(seed=3)
        path = str(tmp_path / 'vit.safetensors')
        save_file(ref.state_dict(), path)
        cfg = None  # the shipped configs' backbone
        mean = std = [127.5] * 3
        return path, cfg, lambda x: ref(x), mean, std
    if kind == 'open_clip':  # a CLIP family: the same chain (issue 16)
        from cma_ood.models.multimodal.clip_vision import \
            encode_image_features
        from cma_ood.models.multimodal.open_clip_builder import \
            build_open_clip
        torch.manual_seed(3)
        ref = build_open_clip('open_clip:tiny-vit-32px').eval()
        path = str(tmp_path / 'open_clip.safetensors')
        save_file(ref.state_dict(), path)
        mean = [122.770938, 116.7460125, 104.09373615]
        std = [68.5005327, 66.6321579, 70.32316305]
        cfg = dict(type='MultiModalClassifier', arch='open_clip:tiny-vit-32px',
                   classnames=list(ID_SHAPES), ood_scorers=[],
                   data_preprocessor=dict(type='CLIPDataPreprocessor',
                                          mean=mean, std=std, to_rgb=True))
        return path, cfg, lambda x: encode_image_features(
            ref, x, 'pre_projection'), mean, std
    torch.manual_seed(3)
    ref = MODELS.build(RESNET).eval()
    with torch.no_grad():  # no channel that ReLU keeps at 0 (std 0)
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(0.1, 0.5)
    path = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': ref.state_dict()}, path)
    cfg = dict(type='FeatureBackbone', source='mmpretrain', model=RESNET,
               input_size=32)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    return path, cfg, lambda x: ref.extract_feat(x, stage='pre_logits'), \
        mean, std


def set_backbone(model_cfg, backbone_cfg, weights):
    """Point a config's backbone at ``weights`` (and swap in another
    backbone)."""
    if backbone_cfg is not None:
        scorers = model_cfg.get('ood_scorers')
        model_cfg.clear()
        model_cfg.update(copy.deepcopy(backbone_cfg))
        if scorers is not None:
            model_cfg['ood_scorers'] = scorers
    model_cfg['pretrained'] = weights


@pytest.mark.parametrize('kind', ['timm', 'mmpretrain', 'open_clip'])
def test_backbone_probe_and_ood_table_end_to_end(tmp_path, kind):
    weights, backbone_cfg, features, mean, std = backbone_weights(kind,
                                                                  tmp_path)
    # 1. tools/extract_features.py on the shipped probe config
    probe_cfg = Config.fromfile(PROBE_CFG)
    set_backbone(probe_cfg.feature_extraction.model, backbone_cfg, weights)
    splits = probe_cfg.feature_extraction.splits
    splits.train.dataloader.dataset.num_per_class = 10
    splits.val.dataloader.dataset.num_per_class = 3
    cfg_file = str(tmp_path / 'probe_cfg.py')
    probe_cfg.dump(cfg_file)
    feat_dir = tmp_path / 'features'
    load_tool('extract_features').main([cfg_file, '--out-dir',
                                        str(feat_dir)])
    train_file, val_file = str(feat_dir / 'train.pt'), str(
        feat_dir / 'val.pt')
    train = load_feature_file(train_file)
    dim = train['feats'].shape[1]
    assert train['feats'].shape == (60, dim)
    # zero-shot pseudo-labels only where there is a text tower
    assert (train['pseudo_labels'] is None) == (kind != 'open_clip')

    # 2. the supervised probe (true labels, z-scored) through the runner
    probe_cfg.work_dir = str(tmp_path / 'probe')
    probe_cfg.model.update(in_dim=dim, stats_file=train_file)
    probe_cfg.train_dataloader.dataset.feature_file = train_file
    for key in ('val_dataloader', 'test_dataloader'):
        probe_cfg[key].dataset.feature_file = val_file
    probe_cfg.train_cfg.update(max_epochs=2, val_interval=2)
    probe_cfg.param_scheduler[0].end = 2
    probe_cfg.default_hooks.checkpoint.interval = 2
    Runner.from_cfg(probe_cfg).train()

    # 3. one OoD table from the shipped test config
    cfg = Config.fromfile(TABLE_CFG)
    cfg.work_dir = str(tmp_path / 'test')
    set_backbone(cfg.model, backbone_cfg, weights)
    for scorer in cfg.model.ood_scorers:
        if 'train_features' in scorer:
            scorer.train_features = train_file
        if 'probe_checkpoint' in scorer:
            scorer.probe_checkpoint = probe_cfg.work_dir
    test = cfg.test_dataloader
    test.update(num_workers=0, batch_size=16)
    test.dataset.id_dataset.num_per_class = 3
    for ood in test.dataset.ood_datasets.values():
        ood.num_per_class = 2
    cfg.test_evaluator.save_plots = False  # PNGs cost seconds, no checks
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    names = {'LinearProbe-MSP', 'LinearProbe-Energy', 'Mahalanobis', 'kNN'}
    report = runner.test_evaluator.metrics[0].last_report
    assert set(report['scores']) == names
    for name in names:
        for ood_set in ('unseen_shapes', 'textures', 'noise'):
            assert 0 <= metrics[f'ood/{name}/{ood_set}/AUROC'] <= 100

    # the ID scores of the table, by the formulas, on features of the
    # reference model computed here
    x, labels = normalised_images(test.dataset.id_dataset, mean, std)
    with torch.no_grad():
        feats = features(x).double()
    scores = runner.test_evaluator.metrics[0].last_scores
    tr_x = train['feats'].double()
    tr_y = train['labels']
    # kNN, k = 1: the largest cosine similarity to a training feature
    cos = torch.nn.functional.normalize(feats, dim=-1) @ \
        torch.nn.functional.normalize(tr_x, dim=-1).T
    np.testing.assert_allclose(scores['kNN']['ID'], cos.max(1).values,
                               rtol=1e-4, atol=1e-5)
    # Mahalanobis (PLP's class means, mean of the per-class unbiased
    # covariances; the config's pseudo-inverse)
    xs, ys = tr_x.numpy(), tr_y.numpy()
    means = np.stack([xs[ys == c].mean(0) for c in range(6)])
    cov = np.mean([np.cov(xs[ys == c].T) for c in range(6)], axis=0)
    # torch.linalg.pinv's default cut-off: eps * size of the largest
    prec = np.linalg.pinv(cov, rcond=cov.shape[0] * np.finfo(float).eps,
                          hermitian=True)
    diff = feats.numpy()[:, None, :] - means[None]
    maha = -np.einsum('ncd,de,nce->nc', diff, prec, diff).min(1)
    np.testing.assert_allclose(scores['Mahalanobis']['ID'], maha,
                               rtol=1e-3, atol=1e-3 * np.abs(maha).max())
    # the probe: MSP and energy of z-scored features through its layer
    ckpt = torch.load(osp.join(probe_cfg.work_dir, 'epoch_2.pth'),
                      map_location='cpu', weights_only=False)['state_dict']
    z = (feats - ckpt['feat_mean'].double()) / ckpt['feat_std'].double()
    logits = z @ ckpt['fc.weight'].double().T + ckpt['fc.bias'].double()
    np.testing.assert_allclose(scores['LinearProbe-MSP']['ID'],
                               logits.softmax(-1).max(-1).values,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores['LinearProbe-Energy']['ID'],
                               torch.logsumexp(logits, -1), rtol=1e-4,
                               atol=1e-5)
    # the ID accuracy is the probe's (a CLIP's: its zero-shot classifier's)
    pred = logits.argmax(-1)
    if kind == 'open_clip':
        with torch.no_grad():
            emb = torch.nn.functional.normalize(
                runner.model.clip.encode_image(x.float()), dim=-1)
            pred = (emb @ runner.model.class_embeddings().T).argmax(-1)
    acc = (pred == torch.tensor(labels)).double().mean()
    assert metrics['ood/accuracy/top1'] == pytest.approx(100 * float(acc))
    assert math.isfinite(report['scores']['kNN']['mean']['AUROC'])
