# One OoD table for timm's frozen ImageNet-21k ViT-B/16 on the MOS
# ImageNet-1k benchmark: supervised linear probing (MSP / max-logit /
# energy of the probe's logits, T = 1) and the feature-space baselines
# Mahalanobis, relative Mahalanobis and kNN (k = 1, cosine) on the cached
# pre-logits of the ImageNet-1k training set, with PLP's settings (as
# configs/plp/baselines_clip-vit-b16_1xb256_in1k-mos.py) except the
# pseudo-inverse of the covariance: a ViT's pre-logits are a LayerNorm
# output, which lies in a hyperplane (sum_i (y_i - beta_i) / gamma_i = 0),
# so the covariance is singular up to rounding (PLP's .inverse() weights
# rounding noise in that direction; inverse='inv' refuses it or does the
# same; docs/backbones.md). The backbone
# (FeatureBackbone) is the one the features were extracted with, with the
# same weights file and preprocessing (timm's: ../_base_/datasets/pipelines/
# timm_vit-in21k.py); the scorers refuse files of other weights
# (check_encoder). ID predictions (accuracy) are the probe's. Steps:
#   python tools/extract_features.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py
#   python tools/test.py configs/linear-probe/baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos.py
# (one process: a frozen model has nothing for DistributedDataParallel to
# wrap). Weights elsewhere: --cfg-options model.pretrained=/path/to/file.
_base_ = [
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/datasets/pipelines/timm_vit-in21k.py',
    '../_base_/default_runtime.py',
]
train_features = 'data/features/vit-base-p16-in21k_timm/in1k_train.pt'
linear_probe = 'work_dirs/linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k'


def _probe(score, name):
    return dict(type='ProbeScorer', probe_checkpoint=linear_probe,
                score=score, name=name)


model = dict(
    type='FeatureBackbone',
    source='timm',
    model_name='vit_base_patch16_224.augreg_in21k',
    model_kwargs=dict(num_classes=0),
    pretrained='checkpoints/timm/vit_base_patch16_224.augreg_in21k/'
    'model.safetensors',
    feature='pre_logits',
    ood_scorers=[
        _probe('msp', 'LinearProbe-MSP'),
        _probe('max_logit', 'LinearProbe-MaxLogit'),
        _probe('energy', 'LinearProbe-Energy'),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            inverse='pinv'),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            relative=True,
            inverse='pinv'),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
test_dataloader = dict(
    dataset=dict(pipeline={{_base_.timm_test_pipeline}}))
test_cfg = dict()
