# What the ImageNet-1k OoD benchmarks (imagenet_ood_mos.py,
# imagenet_ood_openood_v1.5.py, which inherit this) share: the test loader,
# the ID set (ImageNet-1k val, all 50,000 images, through mmpretrain's
# ImageNet, so that ID accuracy is the standard top-1) and OoDMetric. The
# benchmarks add their OoD sets. A config using one names the test
# preprocessing, one pipeline for every set, which differs by method:
#   _base_ = [..., '../_base_/datasets/pipelines/clip.py',
#             '../_base_/datasets/imagenet_ood_mos.py']
#   test_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
# (./pipelines/clip.py; configs whose ImageNet training base already
# inherits it do not list it again). On a CUDA machine,
# pipeline={{_base_.device_test_pipeline}} decodes the JPEGs on the GPU
# (docs/benchmarks.md, "End to end").
imagenet_root = 'data/imagenet'
test_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    # a batch's images as one tensor (cma_ood.datasets.stacked_collate)
    collate_fn=dict(type='stacked_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OoDConcatDataset',
        id_dataset=dict(type='ImageNet', data_root=imagenet_root, split='val'),
    ),
)
test_evaluator = dict(type='OoDMetric')
