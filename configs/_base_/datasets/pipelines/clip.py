# CLIP's preprocessing in mmpretrain transforms, at 224 px (the input size of
# ViT-B/16; docs/custom_data.md lists the size of each architecture). The one
# definition that every CLIP dataset base inherits and every OoD test config
# names:
# - `train_pipeline`: CMA's training augmentation, a random 90-100% crop
#   resized to 224 (bicubic);
# - `test_pipeline`: CLIP's own test preprocessing (clip.load's preprocess:
#   Resize(224) bicubic on the short side + CenterCrop(224)), used for
#   validation, CMA's training and CMA's inference.py;
# - `test_pipeline_bilinear`: torchvision's Resize(224) (bilinear,
#   antialiased on PIL images) + CenterCrop(224), the preprocessing of MCM's
#   and NegLabel's evaluation code.
# - `device_*`: the same pipelines with JPEG decoding, crops and resizes on
#   the GPU (DecodeOnDevice: nvJPEG, batched; other files and machines
#   without CUDA take the CPU pipeline per file). A one-line switch where a
#   config names its pipeline, e.g.
#     test_dataloader = dict(dataset=dict(
#         pipeline={{_base_.device_test_pipeline}}))
#   Close to, not bit-identical with, the CPU pipeline: docs/fidelity.md.
#   Needs the dataloader's collate_fn=dict(type='stacked_collate') (the
#   ImageNet bases set it).
# Both test pipelines give bit-identical images to the published torchvision
# pipelines (tests/test_datasets/test_image_list.py).
# CheckedLoadImageFromFile names the file that fails to load
# (docs/troubleshooting.md).
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.9, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
test_pipeline_bilinear = [
    test_pipeline[0],
    dict(test_pipeline[1], interpolation='bilinear'),
    *test_pipeline[2:],
]
# the test pipelines for datasets that hold decoded images (CIFAR10 and
# CIFAR100 of mmpretrain: RGB arrays in memory, no file to load)
loaded_test_pipeline = test_pipeline[1:]
loaded_test_pipeline_bilinear = test_pipeline_bilinear[1:]
device_train_pipeline = [dict(type='DecodeOnDevice', pipeline=train_pipeline)]
device_test_pipeline = [dict(type='DecodeOnDevice', pipeline=test_pipeline)]
device_test_pipeline_bilinear = [
    dict(type='DecodeOnDevice', pipeline=test_pipeline_bilinear)
]
