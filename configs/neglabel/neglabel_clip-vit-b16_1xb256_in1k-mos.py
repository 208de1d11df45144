# Zero-shot NegLabel (ICLR 2024) with OpenAI's CLIP ViT-B/16 on the MOS
# ImageNet-1k OoD benchmark (iNaturalist, SUN, Places, Textures). Paper
# setting: ID prompts "the nice {}", noun prompts "the nice {}", adjective
# prompts "This is a {} photo", percentile 0.95, ratio 0.15, tau 0.01,
# 100 groups; MCM (T = 1) is reported alongside. NegLabel's evaluation is
# MCM's (inherited): preprocessing as NegLabel's mmcls/datasets/
# ood_dataset.py, torchvision Resize(224) bilinear + CenterCrop(224);
# metrics in the 'mos' convention (mmcls/utils/ood_evaluate.py). No
# training: test the OpenAI weights directly (the mined negatives are
# cached, see NegLabelScorer):
#   python tools/test.py configs/neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py
_base_ = ['../mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py']
model = dict(
    test_template='the nice {}',
    ood_scorers=[
        {{_base_.neglabel_scorer}},
        {{_base_.mcm_scorer}},
    ],
)
