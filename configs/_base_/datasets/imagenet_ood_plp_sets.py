# The ImageNet-1k OoD sets of the PLP study (TMLR 2024; PLP's
# loaders/datasets.py get_ood('IN1K')): the four MOS sets plus ImageNet-O
# (Hendrycks et al., 2,000 images of 200 classes) and NINCO (Bitterwolf et
# al., 5,879 images of 64 classes, its NINCO_OOD_classes folder). Only the
# set definitions (no dataloader), to merge into a MOS test config:
#   _base_ = [<a config on ../_base_/datasets/imagenet_ood_mos.py>,
#             '../_base_/datasets/imagenet_ood_plp_sets.py']
#   test_dataloader = dict(dataset=dict(ood_datasets={{_base_.plp_ood_sets}}))
# Layout (docs/data_preparation.md), every folder scanned recursively:
#   data/ood/{iNaturalist,SUN,Places,Textures,ImageNet-O,NINCO}/**/*.jpg
# PLP's loader reads its textures from a folder named dtd_test (DTD's test
# split, going by the name) where MOS uses all 5,640 DTD images: point
# Textures there to match PLP's.
plp_ood_root = 'data/ood'
plp_ood_sets = {
    name: dict(
        type='CustomDataset',
        data_root=f'{plp_ood_root}/{name}',
        with_label=False)
    for name in ('iNaturalist', 'SUN', 'Places', 'ImageNet-O', 'Textures',
                 'NINCO')
}
