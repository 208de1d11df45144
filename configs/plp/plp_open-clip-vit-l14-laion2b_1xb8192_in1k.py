# PLP (TMLR 2024) with open_clip's ViT-L-14 trained on LAION-2B
# (laion2b_s32b_b82k, PLP's model_builders/openclip.py choice for
# 'ViT-L-14/laion2b'): the published recipe of plp_clip-vit-b16_1xb8192_in1k
# (inherited) on this model's 1024-d pre-projection features (ln_post of the
# class token; open_clip proj=None). open_clip's preprocessing for the
# model is CLIP's (224 px, bicubic, OpenAI mean / std), which the inherited
# pipeline is. Needs open_clip (pip install "cma_ood[open_clip]"); offline,
# set feature_extraction.model.pretrained to the downloaded weights file
# (docs/backbones.md says which):
#   python tools/extract_features.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb8192_in1k.py
#   python tools/test.py configs/plp/baselines_open-clip-vit-l14-laion2b_1xb256_in1k-plp.py
_base_ = ['./plp_clip-vit-b16_1xb8192_in1k.py']
feature_root = 'data/features/open-clip-vit-l14_laion2b'
train_feature_file = feature_root + '/in1k_train.pt'
val_feature_file = feature_root + '/in1k_val.pt'
feature_extraction = dict(
    # pretrained=None: the tag's weights (open_clip downloads them), or a
    # local file
    model=dict(arch='open_clip:ViT-L-14/laion2b_s32b_b82k', pretrained=None),
    splits=dict(
        train=dict(out_file=train_feature_file),
        val=dict(out_file=val_feature_file)))
model = dict(in_dim=1024, stats_file=train_feature_file)
train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
