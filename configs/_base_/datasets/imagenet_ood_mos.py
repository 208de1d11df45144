# ImageNet-1k OoD benchmark of MOS (Huang & Li, CVPR 2021), as used by MCM,
# NegLabel and CMA: ID = ImageNet-1k val (50,000 images), OoD = the MOS
# subsets of iNaturalist, SUN, Places (10,000 images each) and Textures
# (DTD, 5,640 images). Layout (see docs/data_preparation.md):
#   data/imagenet/val/...                       (+ data/imagenet/meta/val.txt)
#   data/ood/{iNaturalist,SUN,Places,Textures}/**/*.jpg
# The OoD folders are scanned recursively for images (mmpretrain's
# CustomDataset with with_label=False), so any sub-folder layout works.
#
# This base exports `ood_test_dataset`, `ood_test_dataloader` (and their
# `_bilinear` variants) and `ood_test_evaluator` rather than `test_dataloader` / `test_evaluator`:
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

# Test preprocessing, one pipeline for every set of the benchmark:
# - `ood_test_pipeline`: CLIP's own (clip.load's preprocess: Resize(224)
#   bicubic + CenterCrop(224)), used by CMA's inference.py and training;
# - `ood_test_pipeline_bilinear`: torchvision Resize(224) (bilinear,
#   antialiased on PIL images) + CenterCrop(224), the preprocessing of
#   MCM's and NegLabel's evaluation code.
# Both give bit-identical images to the published torchvision pipelines
# (tests/test_configs.py).
_resize = dict(type='ResizeEdge', scale=224, edge='short', backend='pillow')
ood_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(_resize, interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
ood_test_pipeline_bilinear = [
    dict(type='CheckedLoadImageFromFile'),
    dict(_resize, interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]


def _folder(name):
    return dict(
        type='CustomDataset', data_root=f'{mos_root}/{name}', with_label=False)


ood_test_dataset = dict(
    type='OoDConcatDataset',
    id_dataset=dict(type='ImageNet', data_root=imagenet_root, split='val'),
    ood_datasets=dict(
        iNaturalist=_folder('iNaturalist'),
        SUN=_folder('SUN'),
        Places=_folder('Places'),
        Textures=_folder('Textures'),
    ),
    pipeline=ood_test_pipeline,
)
ood_test_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=ood_test_dataset)
# the same benchmark with MCM's / NegLabel's bilinear preprocessing
ood_test_dataset_bilinear = dict(
    ood_test_dataset, pipeline=ood_test_pipeline_bilinear)
ood_test_dataloader_bilinear = dict(
    ood_test_dataloader, dataset=ood_test_dataset_bilinear)
ood_test_evaluator = dict(type='OoDMetric')
