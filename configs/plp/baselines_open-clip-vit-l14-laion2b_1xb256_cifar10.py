# The CIFAR-10 (ID) vs CIFAR-100 (OoD) table of the PLP study for open_clip's
# ViT-L-14 (laion2b_s32b_b82k): zero-shot MCM, PLP's logit scores (MSP,
# max-logit, energy at T = 1), Mahalanobis and kNN on the cached training
# features, with PLP's metrics ('cma': FPR95 interpolated at TPR 0.95) and
# the preprocessing the features were extracted with (bicubic). The
# CIFAR-10 benchmark and its settings are inherited from
# configs/mcm/mcm_clip-vit-b16_1xb256_cifar10.py. Steps: the commands of
# plp_open-clip-vit-l14-laion2b_1xb256_cifar10, then
#   python tools/test.py configs/plp/baselines_open-clip-vit-l14-laion2b_1xb256_cifar10.py
_base_ = ['../mcm/mcm_clip-vit-b16_1xb256_cifar10.py']
train_features = 'data/features/open-clip-vit-l14_laion2b/cifar10_train.pt'
plp_probe = 'work_dirs/plp_open-clip-vit-l14-laion2b_1xb256_cifar10'


def _probe(score, name):
    return dict(type='ProbeScorer', probe_checkpoint=plp_probe, score=score,
                name=name)


model = dict(
    arch='open_clip:ViT-L-14/laion2b_s32b_b82k',
    pretrained=None,  # the tag's weights, or a local file
    ood_scorers=[
        {{_base_.mcm_scorer}},
        _probe('msp', 'PLP-MSP'),
        _probe('max_logit', 'PLP-MaxLogit'),
        _probe('energy', 'PLP-Energy'),
        dict(type='MahalanobisScorer', train_features=train_features),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
test_dataloader = dict(
    dataset=dict(pipeline={{_base_.loaded_test_pipeline}}))
test_evaluator = dict(type='OoDMetric', protocol='cma')
