# Supervised linear probing: PLP's recipe with the true ImageNet-1k labels
# as targets (a linear layer on the z-scored 768-d pre-projection features
# of frozen OpenAI CLIP ViT-B/16; Adam, lr 1e-3 * 8192 / 256, weight decay
# 1e-3; 100 epochs, batch 8192, cosine with 10% warm-up; see
# configs/plp/plp_clip-vit-b16_1xb8192_in1k.py).
#   python tools/extract_features.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
_base_ = [
    '../_base_/datasets/in1k_clip-vit-b16_features.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='LinearProbe',
    in_dim=768,
    num_classes=1000,
    normalize='zscore',
    stats_file={{_base_.train_feature_file}})
train_dataloader = dict(dataset=dict(target='labels'))
