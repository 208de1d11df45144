# Your own image folders (docs/custom_data.md): edit `data_root` and the OoD
# sets below, or override them with --cfg-options.
#   data/custom/train/<class>/*.jpg   ID training images, one folder per class
#   data/custom/val/<class>/*.jpg     ID test images, the same class folders
#   data/custom/ood/<set>/**/*.jpg    one folder per OoD set, any layout
# Class names are the folder names (sorted, as mmpretrain's CustomDataset
# labels them); the model takes them with classnames=None. Images go through
# CLIP's preprocessing at 224 px, the input size of ViT-B/16
# (./pipelines/clip.py; see docs/custom_data.md for the size of each
# architecture). Training on train/, ID accuracy on val/ after every epoch,
# and the OoD test: val/ as the ID set and every folder of ood_sets.
_base_ = ['./pipelines/clip.py']
data_root = 'data/custom'
ood_sets = ['near', 'far']  # folder names under data/custom/ood
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=f'{data_root}/train',
                 pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=f'{data_root}/val',
                 pipeline={{_base_.test_pipeline}}))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = dict(
    val_dataloader,
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=dict(type='CustomDataset', data_root=f'{data_root}/val'),
        ood_datasets={
            name: dict(type='CustomDataset',
                       data_root=f'{data_root}/ood/{name}', with_label=False)
            for name in ood_sets
        },
        pipeline={{_base_.test_pipeline}}))
test_evaluator = dict(type='OoDMetric')
