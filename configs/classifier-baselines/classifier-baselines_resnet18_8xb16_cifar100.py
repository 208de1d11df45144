# The fine-tuning baseline of the PLP study on CIFAR-100: the ResNet-18
# recipe of classifier-baselines_resnet18_8xb16_cifar10 (inherited) with
# mmpretrain's CIFAR-100 settings (_base_/datasets/cifar100_bs16.py and the
# schedule of resnet50_8xb16_cifar100: weight decay 5e-4, lr x0.2 at epochs
# 60, 120 and 160 of 200; mmpretrain has no ResNet-18 CIFAR-100 recipe),
# then MSP, max-logit and energy (T = 1) of its logits with CIFAR-10 as the
# OoD set:
#   bash tools/dist_train.sh configs/classifier-baselines/classifier-baselines_resnet18_8xb16_cifar100.py 8
#   python tools/test.py configs/classifier-baselines/classifier-baselines_resnet18_8xb16_cifar100.py \
#       work_dirs/classifier-baselines_resnet18_8xb16_cifar100/epoch_200.pth
_base_ = ['./classifier-baselines_resnet18_8xb16_cifar10.py']
model = dict(head=dict(num_classes=100))
data_preprocessor = dict(
    num_classes=100,
    mean=[129.304, 124.070, 112.434],
    std=[68.170, 65.392, 70.418])
cifar100 = dict(type='CIFAR100', data_root='data/cifar100')
train_dataloader = dict(dataset=cifar100)
val_dataloader = dict(dataset=cifar100)
test_dataloader = dict(
    dataset=dict(
        id_dataset=dict(cifar100, split='test', download=False),
        ood_datasets=dict(
            _delete_=True,
            cifar10=dict(
                type='CIFAR10', data_root='data/cifar10', split='test',
                download=False))))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0005))
param_scheduler = dict(milestones=[60, 120, 160], gamma=0.2)
