# The CPU demo: a tiny CLIP trained from scratch with CMA on generated
# shapes, then evaluated on the ID test set and three OoD sets.
#   python tools/train.py configs/demo/cma_clip-tiny-rn_1xb64_shapes.py
#   python tools/test.py configs/demo/cma_clip-tiny-rn_1xb64_shapes.py \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
_base_ = [
    '../_base_/models/clip_tiny.py',
    '../_base_/datasets/shapes_bs64.py',
    '../_base_/default_runtime.py',
]
max_epochs = 20
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, fused=True),
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=50),
    dict(
        type='CosineAnnealingLR',
        eta_min=0,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]
# exact mid-epoch resume (iteration checkpoints, per-sample augmentation
# seeds): see docs/troubleshooting.md
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs)
test_cfg = dict()
# no validation during training: tools/test.py evaluates the result
val_dataloader = None
val_cfg = None
val_evaluator = None
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
