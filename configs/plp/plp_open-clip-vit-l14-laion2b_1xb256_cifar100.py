# PLP on CIFAR-100 with open_clip's ViT-L-14 (laion2b_s32b_b82k): the recipe
# of plp_open-clip-vit-l14-laion2b_1xb256_cifar10 (inherited) on CIFAR-100.
#   python tools/extract_features.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb256_cifar100.py
#   python tools/train.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb256_cifar100.py
_base_ = ['./plp_open-clip-vit-l14-laion2b_1xb256_cifar10.py']
feature_root = 'data/features/open-clip-vit-l14_laion2b'
train_feature_file = feature_root + '/cifar100_train.pt'
val_feature_file = feature_root + '/cifar100_test.pt'
cifar = dict(type='CIFAR100', data_root='data/cifar100')
feature_extraction = dict(
    model=dict(classnames='cifar100'),
    splits=dict(
        train=dict(dataloader=dict(dataset=cifar),
                   out_file=train_feature_file),
        val=dict(dataloader=dict(dataset=cifar), out_file=val_feature_file)))
model = dict(num_classes=100, stats_file=train_feature_file)
train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
