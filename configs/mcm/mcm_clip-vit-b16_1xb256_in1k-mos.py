# Zero-shot MCM (NeurIPS 2022) with OpenAI's CLIP ViT-B/16 on the MOS
# ImageNet-1k OoD benchmark: max softmax of the cosine similarities to the
# ID prompts over tau = 0.01.
#   python tools/test.py configs/mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/default_runtime.py',
    '../_base_/models/ood_scorers.py',
]
model = dict(
    pretrained='openai',
    classnames='imagenet',
    test_template='the nice {}',
    ood_scorers=[{{_base_.mcm_scorer}}],
)
test_dataloader = {{_base_.ood_test_dataloader}}
test_evaluator = {{_base_.ood_test_evaluator}}
test_cfg = dict()
