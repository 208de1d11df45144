# Supervised linear probing on the CPU demo: as
# configs/plp/plp_clip-tiny-rn_1xb256_shapes.py (PLP's recipe, batch 256,
# lr 1e-3 * 256 / 256) with the true shape labels.
#   python tools/extract_features.py configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py
_base_ = [
    '../_base_/datasets/shapes_features_clip-tiny-rn.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='LinearProbe',
    in_dim=64,
    num_classes=6,
    normalize='zscore',
    stats_file={{_base_.train_feature_file}})
train_dataloader = dict(dataset=dict(target='labels'))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 256 / 256))
auto_scale_lr = dict(base_batch_size=256)
train_cfg = dict(val_interval=100)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=1))
