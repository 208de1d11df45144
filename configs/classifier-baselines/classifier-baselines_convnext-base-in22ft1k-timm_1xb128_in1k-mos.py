# The fine-tuned-classifier baseline of the PLP study (TMLR 2024;
# baseline_fine_tuned_models.py) with a timm ImageNet-1k classifier: MSP,
# max-logit and energy (T = 1) of its logits on the MOS benchmark. Its
# default model, convnext_base_in22ft1k (timm >= 0.9:
# convnext_base.fb_in22k_ft_in1k), and its preprocessing for every model:
# Resize((256, 256)) -- a square resize, not the short side -- bilinear,
# CenterCrop(224), ImageNet mean / std (256 * s / 224 and s for a model of
# input size s = 384 or 256). Needs timm (pip install "cma_ood[timm]").
# Weights: timm downloads them where there is internet (pretrained=True);
# offline, download the model's file on another machine and point timm at it,
#   model = dict(pretrained_cfg_overlay=dict(file='/path/model.safetensors'))
# (or pretrained=False, checkpoint_path='/path/to/state_dict.pth'):
#   python tools/test.py configs/classifier-baselines/classifier-baselines_convnext-base-in22ft1k-timm_1xb128_in1k-mos.py
# Another timm classifier: set model_name (any timm.list_models(pretrained=
# True) name) and its input size in the pipeline.
_base_ = ['./classifier-baselines_resnet50_1xb256_in1k-mos.py']
model = dict(
    _delete_=True,
    type='OoDTimmClassifier',
    model_name='convnext_base.fb_in22k_ft_in1k',
    pretrained=True,
    num_classes=1000)
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
test_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
