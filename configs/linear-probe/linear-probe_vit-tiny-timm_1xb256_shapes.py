# Supervised linear probing of a timm backbone on the CPU demo: as
# linear-probe_clip-tiny-rn_1xb256_shapes.py (inherited: PLP's recipe at
# batch 256 on the true shape labels, z-scored features) on the 48-d
# pre-logits of a tiny timm ViT (2 blocks of width 48, 8 px patches at
# 32 px) as a frozen FeatureBackbone. Its weights are random (pretrained=
# None: seeded by the config's randomness.seed, the same in both tools; the
# scorers check it) -- the recipe, not a result; a real model gets
# pretrained='/path/to/weights' (docs/backbones.md). Needs timm
# (pip install "cma_ood[timm]").
#   python tools/extract_features.py configs/linear-probe/linear-probe_vit-tiny-timm_1xb256_shapes.py
#   python tools/train.py configs/linear-probe/linear-probe_vit-tiny-timm_1xb256_shapes.py
#   python tools/test.py configs/linear-probe/baselines_vit-tiny-timm_1xb256_shapes.py
_base_ = ['./linear-probe_clip-tiny-rn_1xb256_shapes.py']
feature_root = 'work_dirs/features/vit-tiny-timm_shapes'
train_feature_file = feature_root + '/train.pt'
val_feature_file = feature_root + '/val.pt'
feature_extraction = dict(
    model=dict(
        _delete_=True,
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
        feature='pre_logits'),
    splits=dict(
        train=dict(out_file=train_feature_file),
        val=dict(out_file=val_feature_file)))
model = dict(in_dim=48, stats_file=train_feature_file)
train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
