# The fine-tuning baseline of the PLP study on CIFAR-10: mmpretrain's own
# ResNet-18 recipe for CIFAR-10 (resnet18_8xb16_cifar10: model, data,
# augmentation, SGD schedule of 200 epochs) trained by mmpretrain's training
# loop, then MSP, max-logit and energy (T = 1) of its logits with CIFAR-100
# as the OoD set:
#   bash tools/dist_train.sh configs/classifier-baselines/classifier-baselines_resnet18_8xb16_cifar10.py 8
#   python tools/test.py configs/classifier-baselines/classifier-baselines_resnet18_8xb16_cifar10.py \
#       work_dirs/classifier-baselines_resnet18_8xb16_cifar10/epoch_200.pth
# Validation during training: CIFAR-10 accuracy, as mmpretrain's recipe.
# Data layout: docs/data_preparation.md ("CIFAR-10 and CIFAR-100").
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    '../_base_/default_runtime.py',
]
# OoDImageClassifier's default scorers: MSP, max-logit and energy (T = 1)
model = dict(type='OoDImageClassifier')
# the OoD test: CIFAR-10's test split (ID) and CIFAR-100's (OoD), through
# mmpretrain's test pipeline of the recipe (the 32x32 images as they are)
test_dataloader = dict(
    _delete_=True,
    batch_size=256,
    num_workers=2,
    collate_fn=dict(type='stacked_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=dict(
            type='CIFAR10', data_root='data/cifar10', split='test',
            download=False),
        ood_datasets=dict(
            cifar100=dict(
                type='CIFAR100', data_root='data/cifar100', split='test',
                download=False)),
        pipeline={{_base_.test_pipeline}}))
test_evaluator = dict(_delete_=True, type='OoDMetric')
