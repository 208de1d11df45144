"""Every shipped config loads, builds its model, and states the recipe."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmpretrain.registry import MODELS

import cma_ood  # noqa: F401
from _helpers import REPO
from cma_ood.models.multimodal.open_clip_builder import (is_open_clip_arch,
                                                         parse_open_clip_arch)

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
        if is_open_clip_arch(model_cfg.arch):
            # open_clip's large models are not built here (GBs of random
            # weights): their published shapes must fit the pipeline
            assert open_clip_shapes(model_cfg.arch)[0] == _crop_size(cfg)
            return
    if model_cfg.type == 'OoDTimmClassifier':
        model_cfg['pretrained'] = False
    if model_cfg.type == 'FeatureBackbone':
        # a frozen timm / mmpretrain backbone scoring its cached features
        # (configs/linear-probe): its input size is the pipeline's
        _check_feature_backbone(model_cfg, cfg)
        return
    model = _build_on_meta(model_cfg)
    if hasattr(model, 'clip'):
        assert model.clip.visual.input_resolution == _crop_size(cfg)
    elif model_cfg.type in ('OoDImageClassifier', 'OoDTimmClassifier'):
        # a classifier of the ID classes with mmpretrain's preprocessing:
        # BGR files flipped to RGB, CIFAR's RGB arrays not
        id_type = cfg.test_dataloader.dataset.id_dataset.type
        classes, to_rgb = dict(ImageNet=(1000, True), CIFAR10=(10, False),
                               CIFAR100=(100, False))[id_type]
        head = getattr(model, 'head', None) or \
            model.model.get_classifier()
        assert (getattr(head, 'num_classes', None)
                or head.out_features) == classes
        assert cfg.data_preprocessor.to_rgb is to_rgb
    else:
        # a probe on cached features (configs/plp, configs/linear-probe):
        # its input size is the size of the (by default pre-projection)
        # features of the CLIP its feature_extraction section encodes the
        # images with
        extraction = cfg.feature_extraction
        if extraction.model.type == 'FeatureBackbone':
            backbone = _check_feature_backbone(
                extraction.model,
                *[s.dataloader for s in extraction.splits.values()])
            assert model.in_dim == backbone.feature_dim(
                extraction.get('feature', 'pre_projection'))
            return
        if is_open_clip_arch(extraction.model.arch):
            size, width = open_clip_shapes(extraction.model.arch)
            assert extraction.get('feature', 'pre_projection') == \
                'pre_projection'
            assert model.in_dim == width
            for split in extraction.splits.values():
                assert size == _crop_size(split.dataloader)
            return
        clip_model = _build_on_meta(dict(extraction.model, pretrained=None))
        from cma_ood.models.multimodal.clip_vision import image_feature_dim
        assert model.in_dim == image_feature_dim(
            clip_model.clip.visual,
            extraction.get('feature', 'pre_projection'))
        for split in extraction.splits.values():
            assert clip_model.clip.visual.input_resolution == _crop_size(
                split.dataloader)
    assert cfg.test_evaluator and cfg.test_dataloader


def _build_on_meta(model_cfg):
    """Build a CLIP model config on the meta device: shapes and wiring
    without the seconds that initialising a ViT-B/16's weights takes."""
    import torch
    if model_cfg['type'] != 'MultiModalClassifier':
        return MODELS.build(model_cfg)  # small (or not meta-safe: mmcv)
    with torch.device('meta'):
        return MODELS.build(model_cfg)


def _check_feature_backbone(model_cfg, *dataloaders):
    """Build a FeatureBackbone config without its weights file, on the
    meta device (no memory, no initialisation); a ViT's input size must be
    the crop size of the pipelines (of configs or dataloader configs)."""
    import torch
    with torch.device('meta'):
        backbone = MODELS.build(dict(model_cfg, pretrained=None))
    size = getattr(getattr(backbone.net, 'patch_embed', None), 'img_size',
                   None)
    for dataloader in dataloaders:
        assert size is None or tuple(size)[0] == _crop_size(dataloader)
    return backbone


def open_clip_shapes(arch):
    """(input size, pre-projection width) of an open_clip ViT from
    open_clip's model config, and its tag must be one open_clip knows."""
    import open_clip
    name, tag = parse_open_clip_arch(arch)
    if tag is not None:
        assert tag in open_clip.list_pretrained_tags_by_model(name), arch
    vision = open_clip.get_model_config(name)['vision_cfg']
    return vision['image_size'], vision['width']


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
    # CMA's CosineAnnealingWarmupRestarts (tests/test_engine/test_schedulers.py checks
    # it iteration by iteration), its cycle filled in by CMAScheduleHook
    assert cfg.param_scheduler == [
        dict(type='CMAWarmupCosineLR', warmup_iters=500, by_epoch=False)]
    assert dict(type='CMAScheduleHook') in cfg.custom_hooks
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


def test_schedule_lr_is_the_published_one_on_imagenet():
    """The recipe's scheduler, built from the config, on ImageNet-1k's
    1,281,167 images at global batch 512: lr 0 at the first step, the
    linear ramp t / 500, then the cosine over S - 500 with
    S = 10 * (1281167 // 512 + 1) = 25030 (CMA utils/train_utils.py)."""
    import math
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import PARAM_SCHEDULERS
    from cma_ood.engine.schedulers import cma_cycle_iters
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/cma/cma_clip-vit-b16_4xb128_in1k.py'))
    init_default_scope('mmpretrain')
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper).__name__ == 'OptimWrapper'  # fp32 without a GPU
    sched = PARAM_SCHEDULERS.build(
        dict(cfg.param_scheduler[0], optimizer=wrapper))
    sched.cycle_iters = cma_cycle_iters(10, 1281167, 4 * 128)
    assert sched.cycle_iters == 25030
    lrs = []
    for _ in range(25030):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.optimizer.step()
        sched.step()
    peak = 1e-5
    assert lrs[0] == 0.0
    for t in (1, 250, 499):
        assert lrs[t] == pytest.approx(peak * t / 500, rel=1e-12)
    for t in (500, 3000, 12765, 25029):
        assert lrs[t] == pytest.approx(
            peak * (1 + math.cos(math.pi * (t - 500) / 24530)) / 2,
            rel=1e-9, abs=1e-20)
