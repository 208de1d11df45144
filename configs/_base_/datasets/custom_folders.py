# Your own image folders (docs/custom_data.md): edit `data_root` and the OoD
# sets below, or override them with --cfg-options.
#   data/custom/train/<class>/*.jpg   ID training images, one folder per class
#   data/custom/val/<class>/*.jpg     ID test images, the same class folders
#   data/custom/ood/<set>/**/*.jpg    one folder per OoD set, any layout
# Class names are the folder names (sorted, as mmpretrain's CustomDataset
# labels them); the model takes them with classnames=None.
# Exports `custom_train_dataloader`, `custom_val_dataloader`,
# `custom_ood_test_dataloader` and `custom_ood_test_evaluator` for the
# configs in configs/custom/ to assign (as the MOS base does).
data_root = 'data/custom'
ood_sets = ['near', 'far']  # folder names under data/custom/ood
# CLIP's preprocessing at 224 px, the input size of ViT-B/16 (see
# docs/custom_data.md for the size of each architecture)
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.9, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
custom_train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=f'{data_root}/train',
                 pipeline=train_pipeline))
custom_val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=f'{data_root}/val',
                 pipeline=test_pipeline))
custom_ood_test_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=dict(type='CustomDataset', data_root=f'{data_root}/val'),
        ood_datasets={
            name: dict(type='CustomDataset',
                       data_root=f'{data_root}/ood/{name}', with_label=False)
            for name in ood_sets
        },
        pipeline=test_pipeline))
custom_ood_test_evaluator = dict(type='OoDMetric')
