"""OoDImageClassifier: an mmpretrain classifier's MSP, max-logit and energy
against their formulas, its checkpoint keys, and the classifier-baselines
config end to end on generated JPEG folders."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from PIL import Image

import cma_ood  # noqa: F401
from _helpers import REPO

CONFIG = osp.join(REPO, 'configs', 'classifier-baselines',
                  'classifier-baselines_resnet50_1xb256_in1k-mos.py')


def tiny_model_cfg():
    model = Config.fromfile(CONFIG).model
    model.backbone.depth = 18
    model.head.update(in_channels=512, num_classes=7)
    model.ood_scorers = [dict(type='MSPScorer'), dict(type='MaxLogitScorer'),
                         dict(type='EnergyScorer', temperature=2.0)]
    return model


def test_scores_are_the_formulas_of_the_logits():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg()).eval()
    x = torch.randn(5, 3, 32, 32)
    samples = model.predict(x)
    logits = model.head(model.extract_feat(x)).double()
    msp = logits.softmax(-1).max(-1).values
    max_logit = logits.max(-1).values
    energy = 2.0 * torch.logsumexp(logits / 2.0, dim=-1)
    for i, ds in enumerate(samples):
        assert ds.ood_scores.keys() == {'MSP', 'MaxLogit', 'Energy'}
        assert ds.ood_scores['MSP'] == pytest.approx(float(msp[i]), 1e-5)
        assert ds.ood_scores['MaxLogit'] == pytest.approx(
            float(max_logit[i]), 1e-5)
        assert ds.ood_scores['Energy'] == pytest.approx(
            float(energy[i]), 1e-5)
        # the head's own prediction is kept
        assert int(ds.pred_label) == int(logits[i].argmax())


def test_checkpoint_keys_are_mmpretrains():
    cfg = tiny_model_cfg()
    ours = MODELS.build(cfg)
    plain = ImageClassifier(**{k: v for k, v in cfg.items()
                               if k not in ('type', 'ood_scorers', '_scope_')})
    assert set(ours.state_dict()) == set(plain.state_dict())
    ours.load_state_dict(plain.state_dict(), strict=True)


def test_clip_scorers_are_refused():
    cfg = tiny_model_cfg()
    cfg.ood_scorers = [dict(type='MCMScorer')]
    with pytest.raises(ValueError, match='MCMScorer needs a CLIP model'):
        MODELS.build(cfg)


def test_classifier_baselines_config_end_to_end(tmp_path):
    """The config through MMEngine's Runner (as tools/test.py builds it)
    on JPEG folders: one OoD table with the three scores per set."""
    rng = np.random.default_rng(0)

    def folder(name, n, classes=1):
        for c in range(classes):
            d = tmp_path / name / (f'c{c}' if classes > 1 else '')
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (48, 64, 3), np.uint8)
                Image.fromarray(arr).save(d / f'{i}.jpg', quality=90)
        return str(tmp_path / name)

    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.depth = 18
    cfg.model.head.in_channels = 512
    loader = cfg.test_dataloader
    loader.update(batch_size=8, num_workers=0)
    loader.dataset.id_dataset = dict(type='CustomDataset',
                                     data_root=folder('id', 4, classes=2))
    loader.dataset.ood_datasets = {
        name: dict(type='CustomDataset', data_root=folder(name, 6),
                   with_label=False) for name in ('iNaturalist', 'SUN')}
    loader.dataset.pipeline[1].scale = 40
    loader.dataset.pipeline[2].crop_size = 32
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    for score in ('MSP', 'MaxLogit', 'Energy'):
        for name in ('iNaturalist', 'SUN', 'mean'):
            assert 0 <= metrics[f'ood/{score}/{name}/AUROC'] <= 100
    assert 0 <= metrics['ood/accuracy/top1'] <= 100
    # mmpretrain's ImageNet normalisation reached the model
    pre = runner.model.data_preprocessor
    assert torch.allclose(pre.mean.flatten(),
                          torch.tensor([123.675, 116.28, 103.53]))


TIMM_CONFIG = osp.join(
    REPO, 'configs', 'classifier-baselines',
    'classifier-baselines_convnext-base-in22ft1k-timm_1xb128_in1k-mos.py')


def test_timm_classifier_scores_are_the_formulas_of_timms_logits(tmp_path):
    cfg = Config.fromfile(TIMM_CONFIG)
    # PLP's preprocessing: a square bilinear resize to 256, crop 224
    resize, crop = cfg.test_pipeline[1:3]
    assert (resize.scale, resize.interpolation, crop.crop_size) == (
        (256, 256), 'bilinear', 224)
    assert cfg.model.model_name == 'convnext_base.fb_in22k_ft_in1k'
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('test_convnext', num_classes=6).eval()
    path = str(tmp_path / 'timm.pth')
    torch.save(reference.state_dict(), path)
    # timm loads the weights from a local file (no download)
    model = MODELS.build(dict(cfg.model, model_name='test_convnext',
                              pretrained=False, checkpoint_path=path,
                              num_classes=6)).eval()
    x = torch.randn(4, 3, 32, 32)
    samples = model.predict(x)
    with torch.no_grad():
        logits = reference(x).double()
    msp = logits.softmax(-1).max(-1).values
    energy = torch.logsumexp(logits, dim=-1)
    for i, ds in enumerate(samples):
        assert ds.ood_scores['MSP'] == pytest.approx(float(msp[i]), 1e-5)
        assert ds.ood_scores['MaxLogit'] == pytest.approx(
            float(logits[i].max()), 1e-5)
        assert ds.ood_scores['Energy'] == pytest.approx(float(energy[i]),
                                                        1e-5)
        assert int(ds.pred_label) == int(logits[i].argmax())
    # mmpretrain's TimmClassifier keys: a timm state dict loads as it is
    assert set(model.state_dict()) == set(reference.state_dict())
    with pytest.raises(ValueError, match='MCMScorer needs a CLIP model'):
        MODELS.build(dict(cfg.model, model_name='test_convnext',
                          pretrained=False,
                          ood_scorers=[dict(type='MCMScorer')]))


def test_timm_classifier_without_timm_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'timm', None)
    with pytest.raises(ImportError, match=r'cma_ood\[timm\]'):
        MODELS.build(dict(type='OoDTimmClassifier',
                          model_name='test_convnext', pretrained=False))
