# The PLP study's own baseline "supervised linear probing of ImageNet-21k
# models" (baseline_probe_in21k_models.py, default arch
# vit_base_patch16_224_in21k, timm 0.9.2: vit_base_patch16_224.augreg_in21k)
# as published: timm.create_model(..., num_classes=-1) features (the
# pre-logits) of images resized to a 256 x 256 square (torchvision
# Resize((256, 256)), bilinear), centre-cropped to 224 and normalised with
# ImageNet's mean / std (not timm's 0.5 / 0.5 for this model); a linear
# layer on the raw features (no z-scoring), Adam, lr 1e-3 * 1024 / 256,
# weight decay 1e-3, 100 epochs of batch 1024, cosine with 10% warm-up
# (linear_probing.py: train_head), true labels; OoD scores MSP and energy
# at T = 1. Everything else as
# linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py (inherited; weights:
# see there). The published script scores the ID
# *training* images; the OoD table here (baselines_vit-base-p16-in21k-timm-
# plp_1xb256_in1k-mos.py) scores ImageNet val, as every other method.
#   python tools/extract_features.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k.py
#   python tools/test.py configs/linear-probe/baselines_vit-base-p16-in21k-timm-plp_1xb256_in1k-mos.py
_base_ = ['./linear-probe_vit-base-p16-in21k-timm_1xb8192_in1k.py']
feature_root = 'data/features/vit-base-p16-in21k_timm_plp-preprocessing'
train_feature_file = feature_root + '/in1k_train.pt'
val_feature_file = feature_root + '/in1k_val.pt'
feature_extraction = dict(
    model=dict(data_preprocessor={{_base_.plp_data_preprocessor}}),
    splits=dict(
        train=dict(
            dataloader=dict(
                dataset=dict(pipeline={{_base_.plp_test_pipeline}})),
            out_file=train_feature_file),
        val=dict(
            dataloader=dict(
                dataset=dict(pipeline={{_base_.plp_test_pipeline}})),
            out_file=val_feature_file)))
# the raw features (train_head gets the embeddings as they are)
model = dict(normalize=None, stats_file=None)
train_dataloader = dict(
    batch_size=1024, dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 1024 / 256))
auto_scale_lr = dict(base_batch_size=1024)
