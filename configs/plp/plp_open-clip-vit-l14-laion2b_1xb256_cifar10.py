# PLP (TMLR 2024) on CIFAR-10 with open_clip's ViT-L-14 (laion2b_s32b_b82k):
# the published recipe (run_plp.sh, linear_probing.py) with CIFAR's batch of
# 256: a linear layer on the z-scored 1024-d pre-projection features, trained
# on the 5-prompt zero-shot pseudo-labels; Adam lr 1e-3 * 256 / 256, weight
# decay 1e-3, 100 epochs, 10% linear warm-up then cosine, per iteration.
#   python tools/extract_features.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb256_cifar10.py
#   python tools/train.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb256_cifar10.py
#   python tools/test.py configs/plp/baselines_open-clip-vit-l14-laion2b_1xb256_cifar10.py
_base_ = [
    '../_base_/datasets/cifar10_open-clip-vit-l14-laion2b_features.py',
    '../_base_/models/linear_probe.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    in_dim=1024,
    num_classes=10,
    stats_file={{_base_.train_feature_file}})
train_dataloader = dict(dataset=dict(target='pseudo_labels'))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 256 / 256))
auto_scale_lr = dict(base_batch_size=256)
