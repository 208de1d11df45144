# PLP on the CPU demo: a linear probe on cached embeddings of the tiny demo
# CLIP (trained by configs/demo/cma_clip-tiny-rn_1xb64_shapes.py), trained
# on its zero-shot pseudo-labels with the reference schedule (100 epochs,
# cosine with 10% warm-up; 2400 cached embeddings, seconds in all).
#   python tools/extract_features.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py
# then the one-table comparison: configs/demo/baselines_clip-tiny-rn_1xb256_shapes.py
_base_ = [
    '../_base_/datasets/shapes_features_clip-tiny-rn.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(type='LinearProbe', in_dim=64, num_classes=6)
train_dataloader = dict(dataset=dict(target='pseudo_labels'))
# a small problem: a larger lr than the ImageNet recipe's
optim_wrapper = dict(optimizer=dict(lr=1e-2))
auto_scale_lr = dict(base_batch_size=256)
train_cfg = dict(val_interval=100)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=1))
