# Cached OpenAI CLIP ViT-B/16 image features of ImageNet-1k for the probing
# baselines (PLP, linear probing, Mahalanobis, kNN), as PLP's gen_embeds.py
# stores them: the image tower's output BEFORE its projection (open_clip
# proj=None: ln_post of the class token, 768-d; `features @ proj` is the
# 512-d embedding), un-normalised, float32 (PLP: `model(images).float()`).
# 1. Encode train and val once (about 3.9 GB + 150 MB; re-running reuses
#    the files):
#      python tools/extract_features.py CONFIG     (any config using this)
#    or distributed:
#      torchrun --nproc_per_node 8 tools/extract_features.py CONFIG \
#          --launcher pytorch
# 2. Train a probe on the cached embeddings with tools/train.py
#    (./cached_features.py).
# Images go through CLIP's test preprocessing (./pipelines/clip.py: 224 px,
# bicubic, centre crop), also for the training set. The train file also
# holds PLP's pseudo-labels: the argmax of the zero-shot classifier built
# from the 5-prompt ensemble (cma_ood.models.PLP_TEMPLATES) over PLP's class
# names, the first synonym of each entry of mmpretrain's IMAGENET_CATEGORIES
# ('tench, Tinca tinca' -> 'tench'; loaders/datasets.py: get_class_names),
# applied to the projected features.
_base_ = ['./pipelines/clip.py', './cached_features.py']
feature_root = 'data/features/clip-vit-b16_openai'
train_feature_file = feature_root + '/in1k_train.pt'
val_feature_file = feature_root + '/in1k_val.pt'


def _images(split):
    return dict(
        batch_size=256,
        num_workers=8,
        pin_memory=True,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='ImageNet',
            data_root='data/imagenet',
            split=split,
            pipeline={{_base_.test_pipeline}}))


feature_extraction = dict(
    model=dict(
        type='MultiModalClassifier',
        arch='ViT-B/16',
        pretrained='openai',
        classnames='imagenet',
        ood_scorers=[]),
    feature='pre_projection',
    # PLP's names for the pseudo-labels (the model's 'imagenet' alias is
    # IMAGENET_SIMPLE_CATEGORIES, the names of CMA / NegLabel)
    classnames='imagenet_first_synonym',
    dtype='float32',
    splits=dict(
        train=dict(dataloader=_images('train'), out_file=train_feature_file),
        val=dict(dataloader=_images('val'), out_file=val_feature_file)),
)


# PLP's batch of 8192 (run_plp.sh); the last partial training batch is kept
# (157 iterations per epoch)
train_dataloader = dict(
    batch_size=8192,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(
    train_dataloader, dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
