# The built-in procedurally generated demo data (cma_ood.datasets.shapes):
# 6 ID shapes; OoD sets: unseen shapes (near-OoD), textures and colour
# noise (far-OoD). Nothing is downloaded or written to disk.
img_size = 32
train_pipeline = [
    dict(type='RedrawShape'),  # a new drawing of the sample's shape
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.9, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='ShapesDataset',
        split='train',
        num_per_class=400,
        img_size=img_size,
        pipeline=train_pipeline),
)


def _shapes(split, num):
    return dict(
        type='ShapesDataset',
        split=split,
        num_per_class=num,
        img_size=img_size,
        test_mode=True,
        pipeline=test_pipeline)


test_dataloader = dict(
    batch_size=256,
    num_workers=1,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=_shapes('test', 100),
        ood_datasets=dict(
            unseen_shapes=_shapes('near_ood', 100),
            textures=_shapes('textures', 400),
            noise=_shapes('noise', 400)),
        ood_groups=dict(near=['unseen_shapes'], far=['textures', 'noise'])),
)
test_evaluator = dict(type='OoDMetric')
