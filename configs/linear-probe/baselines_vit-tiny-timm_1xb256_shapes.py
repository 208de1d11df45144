# One OoD table on the CPU demo for a timm backbone: supervised linear
# probing (MSP / energy of the probe's logits) and Mahalanobis and kNN on
# the cached pre-logits of the tiny timm ViT of
# linear-probe_vit-tiny-timm_1xb256_shapes.py (the same FeatureBackbone:
# same model, same seed-drawn weights; the scorers check it). Mahalanobis
# uses the pseudo-inverse: a ViT's pre-logits (a LayerNorm output) have a
# singular covariance (baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos.py).
# Steps:
#   python tools/extract_features.py configs/linear-probe/linear-probe_vit-tiny-timm_1xb256_shapes.py
#   python tools/train.py configs/linear-probe/linear-probe_vit-tiny-timm_1xb256_shapes.py
#   python tools/test.py configs/linear-probe/baselines_vit-tiny-timm_1xb256_shapes.py
_base_ = [
    '../_base_/datasets/shapes_bs64.py',
    '../_base_/default_runtime.py',
]
train_features = 'work_dirs/features/vit-tiny-timm_shapes/train.pt'
linear_probe = 'work_dirs/linear-probe_vit-tiny-timm_1xb256_shapes'
model = dict(
    type='FeatureBackbone',
    source='timm',
    model_name='vit_tiny_patch16_224',
    model_kwargs=dict(
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=48,
        num_heads=2,
        num_classes=0),
    pretrained=None,
    feature='pre_logits',
    ood_scorers=[
        dict(
            type='ProbeScorer',
            probe_checkpoint=linear_probe,
            score='msp',
            name='LinearProbe-MSP'),
        dict(
            type='ProbeScorer',
            probe_checkpoint=linear_probe,
            score='energy',
            name='LinearProbe-Energy'),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            inverse='pinv'),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
# a test-only config
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
val_dataloader = None
val_cfg = None
val_evaluator = None
test_cfg = dict()
