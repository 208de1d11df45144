# The OoD table of the PLP study's own linear-probing baseline
# (linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k.py: square 256 resize,
# ImageNet mean / std, a probe on the raw pre-logits): its preprocessing
# and its feature files, otherwise as
# baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos.py (inherited).
#   python tools/test.py configs/linear-probe/baselines_vit-base-p16-in21k-timm-plp_1xb256_in1k-mos.py
_base_ = ['./baselines_vit-base-p16-in21k-timm_1xb256_in1k-mos.py']
train_features = ('data/features/vit-base-p16-in21k_timm_plp-preprocessing/'
                  'in1k_train.pt')
linear_probe = 'work_dirs/linear-probe_vit-base-p16-in21k-timm_1xb1024_in1k'


def _probe(score, name):
    return dict(type='ProbeScorer', probe_checkpoint=linear_probe,
                score=score, name=name)


model = dict(
    data_preprocessor={{_base_.plp_data_preprocessor}},
    ood_scorers=[
        _probe('msp', 'LinearProbe-MSP'),
        _probe('max_logit', 'LinearProbe-MaxLogit'),
        _probe('energy', 'LinearProbe-Energy'),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            inverse='pinv'),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            relative=True,
            inverse='pinv'),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
test_dataloader = dict(dataset=dict(pipeline={{_base_.plp_test_pipeline}}))
