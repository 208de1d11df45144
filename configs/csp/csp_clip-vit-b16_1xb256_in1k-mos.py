# Zero-shot CSP (NeurIPS 2024, conjugated semantic pool) with OpenAI's CLIP
# ViT-B/16 on the MOS ImageNet-1k OoD benchmark, as CSP's
# custom_config/clip-ViT-B16.py: NegLabel's score (tau 0.01, 100 groups)
# over negatives mined from WordNet nouns and conjugated phrases
# "{adjective} {superclass}", ID classes and nouns embedded by CSP's
# 8-template ensemble, phrases by its 4-template one (CSPScorer). Everything
# else is the NegLabel MOS config's, which this one inherits: torchvision
# Resize(224) bilinear + CenterCrop(224), 'mos' metrics; NegLabel and MCM
# (T = 1) are reported alongside (their ID prompts, and the ID accuracy,
# use the classifier's "the nice {}"). No training:
#   python tools/test.py configs/csp/csp_clip-vit-b16_1xb256_in1k-mos.py
_base_ = ['../neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py']
model = dict(ood_scorers=[
    {{_base_.csp_scorer}},
    {{_base_.neglabel_scorer}},
    {{_base_.mcm_scorer}},
])
