# ImageNet-1k benchmark of OpenOOD v1.5: near-OoD SSB-hard and NINCO, far-OoD
# iNaturalist, Textures and OpenImage-O, each listed by an OpenOOD image list
# (lines "relative/path label", labels ignored). ID = ImageNet-1k val through
# mmpretrain's ImageNet (all 50,000 images), so that ID accuracy is the
# standard top-1 and matches the MOS configs; OpenOOD's own ID list
# (test_imagenet.txt) is a subset of the same val images, see
# docs/data_preparation.md for using it instead. Layout:
#   data/imagenet/val/...                       (+ data/imagenet/meta/val.txt)
#   data/openood/benchmark_imglist/imagenet/test_{ssb_hard,ninco,inaturalist,
#       textures,openimage_o}.txt
#   data/openood/images_largescale/{ssb_hard,ninco,inaturalist,textures,
#       openimage_o}/...                        (paths as in the lists)
# Metrics: `ood_test_evaluator` uses OpenOOD v1.5's convention
# (protocol='openood', openood/evaluators/metrics.py): OoD is the positive
# class on the negated score, FPR95 = share of ID flagged as OoD at the first
# ROC point catching >= 95% of OoD, AUPR-In/Out by the trapezoid rule. AUROC
# is the same in every convention. Configs that define their own
# `test_evaluator` must say protocol='openood' themselves.
#
# Exports `ood_test_dataset`, `ood_test_dataloader` and `ood_test_evaluator`
# (see imagenet_ood_mos.py for why and how to use them).
imagenet_root = 'data/imagenet'
openood_root = 'data/openood'
openood_imglist = 'benchmark_imglist/imagenet'  # relative to openood_root
openood_images = 'images_largescale'  # relative to openood_root

# CLIP's test preprocessing (clip.load's preprocess: Resize(224) bicubic +
# CenterCrop(224)), one pipeline for every set
ood_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]


def _openood(name):
    return dict(
        type='ImageListDataset',
        data_root=openood_root,
        ann_file=f'{openood_imglist}/test_{name}.txt',
        data_prefix=openood_images,
        with_label=False)


ood_test_dataset = dict(
    type='OoDConcatDataset',
    id_dataset=dict(type='ImageNet', data_root=imagenet_root, split='val'),
    ood_datasets=dict(
        ssb_hard=_openood('ssb_hard'),
        ninco=_openood('ninco'),
        inaturalist=_openood('inaturalist'),
        textures=_openood('textures'),
        openimage_o=_openood('openimage_o'),
    ),
    ood_groups=dict(
        near=['ssb_hard', 'ninco'],
        far=['inaturalist', 'textures', 'openimage_o']),
    pipeline=ood_test_pipeline,
)
ood_test_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=ood_test_dataset)
ood_test_evaluator = dict(type='OoDMetric', protocol='openood')
