# ImageNet-1k OoD benchmark of MOS (Huang & Li, CVPR 2021), as used by MCM,
# NegLabel and CMA: ID = ImageNet-1k val (50,000 images), OoD = the MOS
# subsets of iNaturalist, SUN, Places (10,000 images each) and Textures
# (DTD, 5,640 images). Layout (see docs/data_preparation.md):
#   data/imagenet/val/...                       (+ data/imagenet/meta/val.txt)
#   data/ood/{iNaturalist,SUN,Places,Textures}/**/*.jpg
# The OoD folders are scanned recursively for images (mmpretrain's
# CustomDataset with with_label=False), so any sub-folder layout works.
#
# This base exports `ood_test_dataset`, `ood_test_dataloader` and
# `ood_test_evaluator` rather than `test_dataloader` / `test_evaluator`:
# MMEngine refuses the same key in two bases, and configs that inherit a
# training config (which has its own test set) must be able to add this one.
# Zero-shot configs (no other test set in their bases):
#   _base_ = [..., '../_base_/datasets/imagenet_ood_mos.py']
#   test_dataloader = {{_base_.ood_test_dataloader}}
#   test_evaluator = {{_base_.ood_test_evaluator}}
# Configs whose bases already define a test set must replace it with
# `_delete_=True` (otherwise the dicts would be merged key by key), see
# configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py.
imagenet_root = 'data/imagenet'
mos_root = 'data/ood'

# CLIP's test preprocessing (as configs/_base_/datasets/imagenet_bs128_clip.py)
ood_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

ood_test_dataset = dict(
    type='OoDConcatDataset',
    id_dataset=dict(
        type='ImageNet',
        data_root=imagenet_root,
        split='val',
        pipeline=ood_test_pipeline),
    ood_datasets=dict(
        iNaturalist=dict(
            type='CustomDataset',
            data_root=mos_root + '/iNaturalist',
            with_label=False,
            pipeline=ood_test_pipeline),
        SUN=dict(
            type='CustomDataset',
            data_root=mos_root + '/SUN',
            with_label=False,
            pipeline=ood_test_pipeline),
        Places=dict(
            type='CustomDataset',
            data_root=mos_root + '/Places',
            with_label=False,
            pipeline=ood_test_pipeline),
        Textures=dict(
            type='CustomDataset',
            data_root=mos_root + '/Textures',
            with_label=False,
            pipeline=ood_test_pipeline),
    ),
)
ood_test_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=ood_test_dataset)
ood_test_evaluator = dict(type='OoDMetric')
