# Zero-shot GL-MCM (global-local MCM) with OpenAI's CLIP ViT-B/16 on the MOS
# ImageNet-1k OoD benchmark, as GL-MCM's scripts/eval_imagenet.sh:
# eval_ood_detection.py --score GL-MCM --lambda_local 0.5 (T = 1, the
# default). Everything else is MCM's protocol, inherited: prompt
# "a photo of a {}", torchvision Resize(224) bilinear + CenterCrop(224),
# FPR95 / AUROC in the 'mos' convention (GL-MCM's fpr_and_fdr_at_recall).
# Score = max softmax(cos / T) + 0.5 * max over patches and classes of the
# per-patch softmax(cos / T), the patch features taken from the last ViT
# block's value path (GLMCMScorer; ResNet towers: the attention pool's
# value path). MCM (T = 1) alongside.
#   python tools/test.py configs/gl-mcm/gl-mcm_clip-vit-b16_1xb256_in1k-mos.py
_base_ = ['../mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py']
model = dict(
    test_template='a photo of a {}',
    ood_scorers=[
        dict(type='GLMCMScorer', lambda_local=0.5, temperature=1.0),
        {{_base_.mcm_scorer}},
    ],
)
