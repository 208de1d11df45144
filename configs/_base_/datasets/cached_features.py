# Cached image features (written by tools/extract_features.py) as the data of
# the probes (PLP, linear probing): CachedFeatureDataset over a feature
# file, the whole set in memory (default_collate, no image decoding). The
# bases that inherit this (in1k_clip-vit-b16_features.py,
# shapes_features_clip-tiny-rn.py) name the files and the loader sizes.
# target='labels' (linear probing) or 'pseudo_labels' (PLP's zero-shot
# labels, set by the PLP configs for training); the ID accuracy of a probe
# is always measured against the true labels. The last partial training
# batch is kept, as PLP does.
train_dataloader = dict(
    batch_size=256,
    num_workers=0,
    drop_last=False,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CachedFeatureDataset', feature='pre_projection',
        target='labels'),
)
val_dataloader = dict(
    train_dataloader, sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
