# ./baselines_clip-vit-b16_1xb256_in1k-mos.py (zero-shot NegLabel and MCM,
# PLP and linear probing, Mahalanobis, kNN) on the six ImageNet-1k OoD sets
# of the PLP study: the MOS sets plus ImageNet-O and NINCO
# (../_base_/datasets/imagenet_ood_plp_sets.py).
#   python tools/test.py configs/plp/baselines_clip-vit-b16_1xb256_in1k-plp.py
_base_ = [
    './baselines_clip-vit-b16_1xb256_in1k-mos.py',
    '../_base_/datasets/imagenet_ood_plp_sets.py',
]
test_dataloader = dict(dataset=dict(ood_datasets={{_base_.plp_ood_sets}}))
# PLP's metric convention (its eval/binary_metrics.py): FPR95 interpolated
# at 95% TPR, AUPR by the trapezoid rule
test_evaluator = dict(type='OoDMetric', protocol='cma')
