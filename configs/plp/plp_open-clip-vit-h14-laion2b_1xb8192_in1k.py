# PLP (TMLR 2024) with open_clip's ViT-H-14 trained on LAION-2B
# (laion2b_s32b_b79k, PLP's choice for 'ViT-H-14/laion2b'): the recipe of
# plp_open-clip-vit-l14-laion2b_1xb8192_in1k (inherited) on this model's
# 1280-d pre-projection features.
#   python tools/extract_features.py configs/plp/plp_open-clip-vit-h14-laion2b_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_open-clip-vit-h14-laion2b_1xb8192_in1k.py
_base_ = ['./plp_open-clip-vit-l14-laion2b_1xb8192_in1k.py']
feature_root = 'data/features/open-clip-vit-h14_laion2b'
train_feature_file = feature_root + '/in1k_train.pt'
val_feature_file = feature_root + '/in1k_val.pt'
feature_extraction = dict(
    model=dict(arch='open_clip:ViT-H-14/laion2b_s32b_b79k'),
    splits=dict(
        train=dict(out_file=train_feature_file),
        val=dict(out_file=val_feature_file)))
model = dict(in_dim=1280, stats_file=train_feature_file)
train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
