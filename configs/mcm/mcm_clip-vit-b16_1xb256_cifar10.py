# Zero-shot MCM (NeurIPS 2022) with OpenAI's CLIP ViT-B/16 on CIFAR-10 (ID)
# against CIFAR-100 (OoD), with MCM's protocol (its prompt, T = 1, Resize(224)
# bilinear + CenterCrop(224) of the 32x32 images, 'mos' metrics). MCM's paper
# reports no CIFAR figures: this config has no published number.
#   python tools/test.py configs/mcm/mcm_clip-vit-b16_1xb256_cifar10.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/pipelines/clip.py',
    '../_base_/datasets/cifar_ood.py',
    '../_base_/default_runtime.py',
]
model = dict(
    classnames='cifar10',  # mmpretrain's label order, words with spaces
    test_template='a photo of a {}',
    ood_scorers=[{{_base_.mcm_scorer}}],
)
test_dataloader = dict(
    dataset=dict(pipeline={{_base_.loaded_test_pipeline_bilinear}}))
test_cfg = dict()
