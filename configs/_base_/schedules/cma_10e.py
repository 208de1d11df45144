# CMA / FLYP fine-tuning schedule: AdamW (lr 1e-5, weight decay 0.1), 500
# linear warm-up iterations from lr 0, cosine to 0 by iteration, 10 epochs,
# for a global batch of 512 (CMA utils/train_utils.py).
# Mixed precision (bf16 where supported) and fused AdamW on GPUs, fp32 on
# CPUs (AutoAmpOptimWrapper); the published run was fp32: set
# optim_wrapper.type='OptimWrapper' to reproduce that exactly.
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1, fused=True),
)
# CMA's CosineAnnealingWarmupRestarts, stepped every iteration: lr 0 at the
# first step, linear to the peak over 500 iterations, then a cosine over the
# rest of a cycle of epochs * (N // B + 1) iterations (N training images,
# global batch B; CMAScheduleHook in default_runtime fills it in)
param_scheduler = [
    dict(type='CMAWarmupCosineLR', warmup_iters=500, by_epoch=False),
]
# EpochBasedTrainLoop that resumes exactly mid-epoch (docs/troubleshooting.md)
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr above is for 512 images per iteration; `--auto-scale-lr` rescales it
auto_scale_lr = dict(base_batch_size=512)
