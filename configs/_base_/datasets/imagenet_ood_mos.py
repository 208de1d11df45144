# ImageNet-1k OoD benchmark of MOS (Huang & Li, CVPR 2021), as used by MCM,
# NegLabel and CMA: ID = ImageNet-1k val (50,000 images), OoD = the MOS
# subsets of iNaturalist, SUN, Places (10,000 images each) and Textures
# (DTD, 5,640 images). Layout (see docs/data_preparation.md):
#   data/imagenet/val/...                       (+ data/imagenet/meta/val.txt)
#   data/ood/{iNaturalist,SUN,Places,Textures}/**/*.jpg
# The OoD folders are scanned recursively for images (mmpretrain's
# CustomDataset with with_label=False), so any sub-folder layout works.
# Defines `test_dataloader` and `test_evaluator` (OoDMetric, 'mos'
# convention) on ./imagenet_ood.py; the config names the preprocessing
# (see there).
_base_ = ['./imagenet_ood.py']
mos_root = 'data/ood'


def _folder(name):
    return dict(
        type='CustomDataset', data_root=f'{mos_root}/{name}', with_label=False)


test_dataloader = dict(
    dataset=dict(
        ood_datasets={
            name: _folder(name)
            for name in ('iNaturalist', 'SUN', 'Places', 'Textures')
        }))
