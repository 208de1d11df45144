# Probe schedule of PLP (TMLR 2024) and linear probing: 100 epochs, cosine
# with a 10% (10-epoch) linear warm-up, both stepped every iteration. The
# optimizer is a free choice of this config (the reference schedule fixes
# only epochs, batch size and the lr shape): AdamW, lr 1e-3, no weight
# decay, for a batch of 8192. Override e.g.
#   --cfg-options optim_wrapper.optimizer.lr=3e-3
#   --cfg-options optim_wrapper.optimizer.type=SGD \
#       optim_wrapper.optimizer.momentum=0.9
max_epochs = 100
warmup_epochs = 10
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0),
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=0,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
# lr above is for 8192 samples per iteration; `--auto-scale-lr` rescales it
auto_scale_lr = dict(base_batch_size=8192)
