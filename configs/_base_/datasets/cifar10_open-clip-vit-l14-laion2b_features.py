# Cached open_clip ViT-L-14 (laion2b_s32b_b82k) image features of CIFAR-10
# (train: 50,000, test: 10,000) for PLP's CIFAR benchmark (TMLR 2024;
# run_plp.sh): the 1024-d pre-projection features (open_clip proj=None),
# un-normalised, float32, of the 32x32 images through the model's test
# preprocessing (Resize(224) bicubic + CenterCrop(224), OpenAI mean / std;
# mmpretrain's CIFAR10 holds decoded RGB images: no loader, to_rgb=False).
# The train file also holds PLP's pseudo-labels (5-prompt ensemble over the
# CIFAR-10 names). CIFAR-100: plp_open-clip-vit-l14-laion2b_1xb256_cifar100.
#   python tools/extract_features.py CONFIG     (a config using this)
_base_ = ['./pipelines/clip.py', './cached_features.py']
feature_root = 'data/features/open-clip-vit-l14_laion2b'
train_feature_file = feature_root + '/cifar10_train.pt'
val_feature_file = feature_root + '/cifar10_test.pt'
cifar = dict(type='CIFAR10', data_root='data/cifar10', download=False)


def _images(split):
    return dict(
        batch_size=512,  # PLP's gen_embeds.py batch
        num_workers=4,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            cifar, split=split, pipeline={{_base_.loaded_test_pipeline}}))


feature_extraction = dict(
    model=dict(
        type='MultiModalClassifier',
        arch='open_clip:ViT-L-14/laion2b_s32b_b82k',
        pretrained=None,  # the tag's weights, or a local file
        classnames='cifar10',
        ood_scorers=[],
        # the images are RGB arrays already
        data_preprocessor=dict(
            type='CLIPDataPreprocessor',
            mean=[122.770938, 116.7460125, 104.09373615],
            std=[68.5005327, 66.6321579, 70.32316305],
            to_rgb=False)),
    feature='pre_projection',
    dtype='float32',
    splits=dict(
        train=dict(dataloader=_images('train'), out_file=train_feature_file),
        val=dict(dataloader=_images('test'), out_file=val_feature_file)),
)
# PLP's CIFAR batch of 256 (run_plp.sh)
train_dataloader = dict(
    batch_size=256,
    num_workers=2,
    dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(
    train_dataloader, dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
