# ImageNet-1k benchmark of OpenOOD v1.5: near-OoD SSB-hard and NINCO, far-OoD
# iNaturalist, Textures and OpenImage-O, each listed by an OpenOOD image list
# (lines "relative/path label", labels ignored). ID = ImageNet-1k val through
# mmpretrain's ImageNet (all 50,000 images, ./imagenet_ood.py), so that ID
# accuracy is the standard top-1 and matches the MOS configs; OpenOOD's own
# ID list (test_imagenet.txt) is a subset of the same val images, see
# docs/data_preparation.md for using it instead. Layout:
#   data/imagenet/val/...                       (+ data/imagenet/meta/val.txt)
#   data/openood/benchmark_imglist/imagenet/test_{ssb_hard,ninco,inaturalist,
#       textures,openimage_o}.txt
#   data/openood/images_largescale/{ssb_hard,ninco,inaturalist,textures,
#       openimage_o}/...                        (paths as in the lists)
# Metrics: `test_evaluator` uses OpenOOD v1.5's convention
# (protocol='openood', openood/evaluators/metrics.py): OoD is the positive
# class on the negated score, FPR95 = share of ID flagged as OoD at the first
# ROC point catching >= 95% of OoD, AUPR-In/Out by the trapezoid rule. AUROC
# is the same in every convention. Configs that replace `test_evaluator`
# (rather than merging into it) must say protocol='openood' themselves.
# Defines `test_dataloader` and `test_evaluator` on ./imagenet_ood.py; the
# config names the preprocessing (see there).
_base_ = ['./imagenet_ood.py']
openood_root = 'data/openood'
openood_imglist = 'benchmark_imglist/imagenet'  # relative to openood_root
openood_images = 'images_largescale'  # relative to openood_root


def _openood(name):
    return dict(
        type='ImageListDataset',
        data_root=openood_root,
        ann_file=f'{openood_imglist}/test_{name}.txt',
        data_prefix=openood_images,
        with_label=False)


test_dataloader = dict(
    dataset=dict(
        ood_datasets={
            name: _openood(name)
            for name in ('ssb_hard', 'ninco', 'inaturalist', 'textures',
                         'openimage_o')
        },
        ood_groups=dict(
            near=['ssb_hard', 'ninco'],
            far=['inaturalist', 'textures', 'openimage_o'])))
test_evaluator = dict(protocol='openood')
