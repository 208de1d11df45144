# timm's evaluation preprocessing of its ImageNet-21k ViTs (the augreg
# weights, e.g. vit_base_patch16_224.augreg_in21k and
# vit_large_patch16_224.augreg_in21k), in mmpretrain transforms: timm's
# resolve_data_config gives 224 px, crop_pct 0.9, bicubic, so the shorter
# side is resized to floor(224 / 0.9) = 248 (PIL, bicubic) and the centre
# 224 x 224 cropped; the normalisation (mean = std = 0.5) is the data
# preprocessor's, which FeatureBackbone takes from timm's data config by
# default. For another timm model print its pipeline with
#   from cma_ood.models.backbones import timm_data_config, timm_eval_pipeline
#   timm_eval_pipeline(timm_data_config(model.net))   # model: FeatureBackbone
# (docs/backbones.md).
timm_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=248,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# The PLP study's preprocessing of these models in its linear-probing
# baseline (baseline_probe_in21k_models.py: get_transforms(224)):
# torchvision Resize((256, 256)) -- a square, not the short side --
# bilinear, CenterCrop(224), ImageNet's mean / std (not timm's 0.5 / 0.5).
plp_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='Resize',
        scale=(256, 256),
        backend='pillow',
        interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
plp_data_preprocessor = dict(
    type='CLIPDataPreprocessor',
    mean=[123.675, 116.28, 103.53],  # 255 * (0.485, 0.456, 0.406)
    std=[58.395, 57.12, 57.375],  # 255 * (0.229, 0.224, 0.225)
    to_rgb=True)
