# Test a CMA fine-tuned CLIP ViT-B/16 with CSP (NeurIPS 2024) on the MOS
# ImageNet-1k OoD benchmark: the CMA + NegLabel config this one inherits
# (model, training data, schedule, bicubic test preprocessing, 'mos'
# metrics), with CSP's negatives (conjugated semantic pool, prompt
# ensembles; CSPScorer) mined with the fine-tuned text tower, reported
# next to NegLabel and MCM. Our protocol: no published number.
#   python tools/test.py configs/cma/cma-csp_clip-vit-b16_4xb128_in1k-mos.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth
_base_ = ['./cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py']
model = dict(ood_scorers=[
    {{_base_.csp_scorer}},
    {{_base_.neglabel_scorer}},
    {{_base_.mcm_scorer}},
])
