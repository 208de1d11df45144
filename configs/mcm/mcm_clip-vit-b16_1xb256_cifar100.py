# Zero-shot MCM with OpenAI's CLIP ViT-B/16 on CIFAR-100 (ID) against
# CIFAR-10 (OoD): ./mcm_clip-vit-b16_1xb256_cifar10.py with the roles
# swapped. No published number.
#   python tools/test.py configs/mcm/mcm_clip-vit-b16_1xb256_cifar100.py
_base_ = ['./mcm_clip-vit-b16_1xb256_cifar10.py']
model = dict(classnames='cifar100')
test_dataloader = dict(
    dataset=dict(
        id_dataset={{_base_.cifar100}},
        ood_datasets=dict(_delete_=True, cifar10={{_base_.cifar10}})))
