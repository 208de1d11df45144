# PLP on the CPU demo: a linear probe on cached features of the tiny demo
# CLIP (trained by configs/demo/cma_clip-tiny-rn_1xb64_shapes.py), trained
# on its zero-shot pseudo-labels with PLP's recipe (z-scored features; Adam,
# weight decay 1e-3; 100 epochs, cosine with 10% warm-up; 2400 cached
# features, seconds in all). The batch is 256 (PLP's default and its CIFAR
# batch) instead of ImageNet's 8192, so the lr is 1e-3 * 256 / 256 by PLP's
# rule.
#   python tools/extract_features.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py
# then the one-table comparison: configs/demo/baselines_clip-tiny-rn_1xb256_shapes.py
_base_ = [
    '../_base_/datasets/shapes_features_clip-tiny-rn.py',
    '../_base_/models/linear_probe.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    in_dim=64,
    num_classes=6,
    stats_file={{_base_.train_feature_file}})
train_dataloader = dict(dataset=dict(target='pseudo_labels'))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 256 / 256))
auto_scale_lr = dict(base_batch_size=256)
train_cfg = dict(val_interval=100)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=1))
