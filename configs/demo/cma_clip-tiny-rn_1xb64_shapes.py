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
# Training from scratch is chaotic: a difference in the last bit of one
# kernel's result (another CPU, another thread count) grows into another
# model. Four choices make the outcome stable (README "Demo" states the
# range, docs/benchmarks.md "CPU: the demo" the measurements): every epoch
# draws new images (RedrawShape, seeded per sample), 600 per class, so that
# training reaches the ceiling where runs agree; gradients are clipped at
# norm 1; and the text tower, which only has to keep six class prompts
# apart, learns 30x slower than the image tower.
_text_lr = dict(lr_mult=0.03)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, fused=True),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(
        custom_keys={
            f'clip.{name}': _text_lr
            for name in ('transformer', 'token_embedding',
                         'positional_embedding', 'text_projection',
                         'ln_final')
        }),
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
train_dataloader = dict(dataset=dict(num_per_class=600))
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
