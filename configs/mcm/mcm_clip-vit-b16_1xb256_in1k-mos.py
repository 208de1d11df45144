# Zero-shot MCM (NeurIPS 2022) with OpenAI's CLIP ViT-B/16 on the MOS
# ImageNet-1k OoD benchmark, as MCM's eval_ood_detection.py: prompt
# "a photo of a {}", score = max softmax of the raw cosine similarities to
# the ID prompts (T = 1), torchvision Resize(224) bilinear + CenterCrop(224),
# FPR95 / AUROC in the 'mos' convention (MCM's fpr_and_fdr_at_recall).
#   python tools/test.py configs/mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/pipelines/clip.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/default_runtime.py',
]
model = dict(
    test_template='a photo of a {}',
    ood_scorers=[{{_base_.mcm_scorer}}],
)
test_dataloader = dict(
    dataset=dict(pipeline={{_base_.test_pipeline_bilinear}}))
test_cfg = dict()
