"""Every shipped config loads, builds its model, and states the recipe."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmpretrain.registry import MODELS

import cma_ood  # noqa: F401
from _helpers import REPO

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


def test_configs_found():
    names = {osp.relpath(p, REPO) for p in CONFIGS}
    assert {
        'configs/cma/cma_clip-vit-b16_4xb128_in1k.py',
        'configs/flyp/flyp_clip-vit-b16_4xb128_in1k.py',
        'configs/demo/cma_clip-tiny-rn_1xb64_shapes.py',
    } <= names


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_loads_and_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    assert 'cma_ood' in cfg.custom_imports['imports']
    # name pattern {algorithm}_{backbone}_{N}xb{B}_{dataset}.py
    parts = osp.basename(path)[:-3].split('_')
    assert len(parts) == 4 and 'xb' in parts[2], parts
    gpus, per_gpu = parts[2].split('xb')
    loader = cfg.get('train_dataloader') or cfg.test_dataloader
    assert int(per_gpu) == loader.batch_size
    model_cfg = cfg.model.copy()
    if model_cfg.type == 'MultiModalClassifier':
        model_cfg['pretrained'] = None  # no downloads in tests
    model = MODELS.build(model_cfg)
    if hasattr(model, 'clip'):
        assert model.clip.visual.input_resolution == _crop_size(cfg)
    else:
        # a probe on cached embeddings (configs/plp, configs/linear-probe):
        # its input size is the embedding size of the CLIP that its
        # feature_extraction section encodes the images with
        extraction = cfg.feature_extraction
        clip_model = MODELS.build(dict(extraction.model, pretrained=None))
        assert model.in_dim == clip_model.clip.text_projection.shape[1]
        for split in extraction.splits.values():
            assert clip_model.clip.visual.input_resolution == _crop_size(
                split.dataloader)
    assert cfg.test_evaluator and cfg.test_dataloader


def _crop_size(cfg):
    """CenterCrop size of the test pipeline of a config (or of the pipeline
    of a dataloader config), else ``img_size`` of the config or of its
    dataset (ShapesDataset), else 224."""
    dataset = (cfg.get('test_dataloader') or cfg).dataset
    for step in dataset.get('pipeline', []):
        if step['type'] == 'CenterCrop':
            return step['crop_size']
    return cfg.get('img_size', dataset.get('img_size', 224))


def test_cma_recipe_matches_the_paper():
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/cma/cma_clip-vit-b16_4xb128_in1k.py'))
    assert cfg.model.arch == 'ViT-B/16' and cfg.model.pretrained == 'openai'
    assert cfg.model.loss == dict(type='CMALoss', lam=0.001)
    assert cfg.model.train_template == 'a photo of a {}'
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=1e-5, weight_decay=0.1, fused=True)
    assert cfg.optim_wrapper.type == 'AutoAmpOptimWrapper'
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.end) == ('LinearLR', False,
                                                          500)
    assert warmup.start_factor == pytest.approx(1 / 500)
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == 0
    assert cosine.convert_to_iter_based and cosine.end == 10
    assert cfg.train_cfg.max_epochs == 10
    # 4 GPUs x 128 = the published global batch of 512
    assert cfg.train_dataloader.batch_size * 4 == 512
    assert cfg.auto_scale_lr.base_batch_size == 512
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert crop == dict(type='RandomResizedCrop', scale=224,
                        crop_ratio_range=(0.9, 1.0), backend='pillow',
                        interpolation='bicubic')
    resize, center = cfg.test_dataloader.dataset.pipeline[1:3]
    assert (resize.scale, resize.edge, resize.interpolation) == (224, 'short',
                                                                 'bicubic')
    assert center.crop_size == 224
    flyp = Config.fromfile(
        osp.join(REPO, 'configs/flyp/flyp_clip-vit-b16_4xb128_in1k.py'))
    assert flyp.model.loss == dict(type='CMALoss', lam=0.0)
    flyp.model.loss = cfg.model.loss
    assert flyp.to_dict() == cfg.to_dict()  # FLYP differs by lam only


def test_schedule_lr_follows_warmup_then_cosine():
    """Build the recipe's schedulers on a dummy optimizer and compare the
    learning rate to the reference (linear warm-up, cosine to 0)."""
    import math
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.scheduler import (CosineAnnealingLR, LinearLR)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/cma/cma_clip-vit-b16_4xb128_in1k.py'))
    iters_per_epoch = 100
    total = 10 * iters_per_epoch
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper).__name__ == 'OptimWrapper'  # fp32 without a GPU
    warmup = LinearLR(wrapper.optimizer, start_factor=1 / 500, by_epoch=False,
                      begin=0, end=500)
    cosine = CosineAnnealingLR.build_iter_from_epoch(
        wrapper.optimizer, eta_min=0, begin=0, end=10,
        epoch_length=iters_per_epoch)
    lrs = []
    for _ in range(total):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.optimizer.step()
        warmup.step()
        cosine.step()
    base = 1e-5
    cos = [0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    # warm-up: the reference's (t + 1) / 500 ramp, times the cosine factor
    # of the whole run (within 0.1% of 1 over 500 of ImageNet's 25k steps)
    for t in (0, 1, 250, 499):
        assert lrs[t] == pytest.approx(base * (t + 1) / 500 * cos[t],
                                       rel=1e-9)
    for t in (500, 700, 999):
        assert lrs[t] == pytest.approx(base * cos[t], rel=1e-9)
