# PLP (pseudo-label probing, TMLR 2024): a linear layer on frozen OpenAI
# CLIP ViT-B/16 image features of ImageNet-1k, trained on CLIP's own
# zero-shot predictions (5-prompt ensemble over PLP's first-synonym class
# names) instead of the true labels. The published recipe (linear_probing.py,
# run_plp.sh): the 768-d pre-projection features, z-scored with the
# training set's mean and unbiased std (kept in the probe's checkpoint and
# applied to val, test and OoD features too); Adam, lr 1e-3 * 8192 / 256,
# weight decay 1e-3; cross-entropy; 100 epochs of batch 8192, linear
# warm-up over the first 10% of the iterations then cosine, per iteration
# (_base_/schedules/probe_100e.py).
#   python tools/extract_features.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
# Validation reports the probe's top-1/top-5 on ImageNet val (true labels).
# OoD scores (MSP, energy at T = 1; max-logit) next to NegLabel, MCM,
# Mahalanobis and kNN: configs/plp/baselines_clip-vit-b16_1xb256_in1k-mos.py.
_base_ = [
    '../_base_/datasets/in1k_clip-vit-b16_features.py',
    '../_base_/models/linear_probe.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    in_dim=768,  # ViT-B/16 width: the features before the projection
    num_classes=1000,
    stats_file={{_base_.train_feature_file}})
train_dataloader = dict(dataset=dict(target='pseudo_labels'))
