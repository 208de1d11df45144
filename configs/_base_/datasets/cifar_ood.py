# CIFAR-10 as ID and CIFAR-100 as OoD (the CIFAR benchmark of the PLP study,
# TMLR 2024), the test splits (10,000 images each) through mmpretrain's
# CIFAR10 / CIFAR100 datasets, which check the files' md5 sums. Layout
# (the "python version" archives, extracted; docs/data_preparation.md):
#   data/cifar10/cifar-10-batches-py/{test_batch,batches.meta,...}
#   data/cifar100/cifar-100-python/{test,meta,...}
# The datasets hold the decoded 32x32 images (RGB, in memory: no loader), so
# the pipeline is a CLIP test pipeline without its loader
# (./pipelines/clip.py `loaded_test_pipeline*`, named by the config), and
# the model must not flip BGR -> RGB: the data_preprocessor below (CLIP's
# mean and std, to_rgb=False) is taken by the model where its config sets
# none (MMEngine's Runner). For CIFAR-100 as ID, swap the roles:
#   test_dataloader = dict(dataset=dict(
#       id_dataset={{_base_.cifar100}},
#       ood_datasets=dict(_delete_=True, cifar10={{_base_.cifar10}})))
cifar10 = dict(
    type='CIFAR10', data_root='data/cifar10', split='test', download=False)
cifar100 = dict(
    type='CIFAR100', data_root='data/cifar100', split='test', download=False)
data_preprocessor = dict(
    type='CLIPDataPreprocessor',
    mean=[122.770938, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    to_rgb=False)
test_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=False,
    pin_memory=True,
    collate_fn=dict(type='stacked_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=cifar10,
        ood_datasets=dict(cifar100=cifar100)),
)
test_evaluator = dict(type='OoDMetric')
