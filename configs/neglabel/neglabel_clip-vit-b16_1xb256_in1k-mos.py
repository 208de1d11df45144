# Zero-shot NegLabel (ICLR 2024) with OpenAI's CLIP ViT-B/16 on the MOS
# ImageNet-1k OoD benchmark (iNaturalist, SUN, Places, Textures). Paper
# setting: ID prompts "the nice {}", noun prompts "the nice {}", adjective
# prompts "This is a {} photo", percentile 0.95, ratio 0.15, tau 0.01,
# 100 groups; MCM (T = 1) is reported alongside. Preprocessing as NegLabel's
# mmcls/datasets/ood_dataset.py: torchvision Resize(224) bilinear +
# CenterCrop(224); metrics in the 'mos' convention (mmcls/utils/
# ood_evaluate.py). No training: test the OpenAI weights directly (the
# mined negatives are cached, see NegLabelScorer):
#   python tools/test.py configs/neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/default_runtime.py',
    '../_base_/models/ood_scorers.py',
]
model = dict(
    # ID prompts: the base's test_template 'the nice {}'
    ood_scorers=[
        {{_base_.neglabel_scorer}},
        {{_base_.mcm_scorer}},
    ],
)
test_dataloader = {{_base_.ood_test_dataloader_bilinear}}
test_evaluator = {{_base_.ood_test_evaluator}}
test_cfg = dict()
