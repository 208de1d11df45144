# The fine-tuned-classifier baselines of the PLP study (TMLR 2024): MSP,
# max-logit and energy (T = 1) of an ImageNet-1k classifier's logits, here
# mmpretrain's ResNet-50, on the MOS benchmark in one OoD table. Model and
# preprocessing are mmpretrain's own (_base_/models/resnet50.py and the test
# pipeline and normalisation of _base_/datasets/imagenet_bs32.py); any
# mmpretrain classification checkpoint of that model loads (its keys are
# unchanged):
#   python tools/test.py configs/classifier-baselines/classifier-baselines_resnet50_1xb256_in1k-mos.py \
#       resnet50_8xb32_in1k_20210831-ea4938fc.pth --trust-checkpoint
# (--trust-checkpoint: mmpretrain's checkpoints hold objects outside cma_ood's
# weights-only allow-list; only for files you trust). Another classifier:
# replace backbone / neck / head (and the pipeline) with its mmpretrain
# config. No published number is reproduced here.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/default_runtime.py',
]
# OoDImageClassifier's default scorers: MSP, max-logit and energy (T = 1)
model = dict(type='OoDImageClassifier')
# mmpretrain's ImageNet normalisation (taken by the model, which sets none)
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_cfg = dict()
