# Supervised linear probing of timm's ViT-B/16 pre-trained on ImageNet-21k
# (augreg, vit_base_patch16_224.augreg_in21k: the PLP study's
# 'vit_base_patch16_224_in21k' under timm 0.9.2), frozen, on ImageNet-1k:
# PLP's probe recipe as the other linear-probe configs (inherited from
# linear-probe_clip-vit-b16_1xb8192_in1k.py: one linear layer on the
# z-scored 768-d features, Adam, lr 1e-3 * 8192 / 256, weight decay 1e-3,
# 100 epochs of batch 8192, cosine with 10% warm-up; the true labels) on
# the model's pre-logits (FeatureBackbone, feature 'pre_logits': the normed
# class token, what timm gives with num_classes=0), extracted with timm's
# own preprocessing of the model (../_base_/datasets/pipelines/
# timm_vit-in21k.py: 248 px bicubic short side, centre crop 224, mean = std
# = 0.5). The PLP study's own baseline script differs (square resize,
# ImageNet mean / std, raw features, batch 1024):
# linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k.py.
# Needs timm (pip install "cma_ood[timm]") and the weights, a local file
# (nothing is downloaded here), e.g. from the Hugging Face hub:
#   huggingface-cli download timm/vit_base_patch16_224.augreg_in21k \
#       model.safetensors \
#       --local-dir checkpoints/timm/vit_base_patch16_224.augreg_in21k
# (another place: --cfg-options \
#      feature_extraction.model.pretrained=/path/to/model.safetensors)
#   python tools/extract_features.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py
#   python tools/test.py configs/linear-probe/baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos.py
_base_ = [
    './linear-probe_clip-vit-b16_1xb8192_in1k.py',
    '../_base_/datasets/pipelines/timm_vit-in21k.py',
]
feature_root = 'data/features/vit-base-p16-in21k_timm'
train_feature_file = feature_root + '/in1k_train.pt'
val_feature_file = feature_root + '/in1k_val.pt'
feature_extraction = dict(
    model=dict(
        _delete_=True,
        type='FeatureBackbone',
        source='timm',
        model_name='vit_base_patch16_224.augreg_in21k',
        # features only: the file's 21,843-class head is not loaded
        model_kwargs=dict(num_classes=0),
        pretrained='checkpoints/timm/vit_base_patch16_224.augreg_in21k/'
        'model.safetensors',
        feature='pre_logits'),
    # stored as the 'pre_projection' kind: a FeatureBackbone's pre-logits
    feature='pre_projection',
    # no zero-shot pseudo-labels (no text tower): the probe uses the labels
    classnames=None,
    splits=dict(
        train=dict(
            dataloader=dict(
                dataset=dict(pipeline={{_base_.timm_test_pipeline}})),
            out_file=train_feature_file),
        val=dict(
            dataloader=dict(
                dataset=dict(pipeline={{_base_.timm_test_pipeline}})),
            out_file=val_feature_file)))
model = dict(in_dim=768, num_classes=1000, stats_file=train_feature_file)
train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
