# ImageNet-1k train and val with CLIP's preprocessing (./pipelines/clip.py:
# 224 px, bicubic), the training data of CMA and FLYP. Layout: either
#   data/imagenet/{train,val}/<wnid>/*.JPEG  (class folders), or
#   data/imagenet/{train,val}/... + data/imagenet/meta/{train,val}.txt
# ("relative/path label" lines); see README "Data".
# No test set: configs/cma/cma_clip-vit-b16_4xb128_in1k.py tests on val,
# the CMA test configs add an OoD benchmark (imagenet_ood_*.py) beside this.
_base_ = ['./pipelines/clip.py']
dataset_type = 'ImageNet'
data_root = 'data/imagenet'

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # a batch's images as one tensor (cma_ood.datasets.stacked_collate)
    collate_fn=dict(type='stacked_collate'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline={{_base_.train_pipeline}}),
)
val_dataloader = dict(
    train_dataloader,
    batch_size=256,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        train_dataloader['dataset'],
        split='val',
        pipeline={{_base_.test_pipeline}}),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
