# The OoD table of baselines_clip-vit-b16_1xb256_in1k-plp (inherited: PLP's
# six ImageNet OoD sets, 'cma' metrics; zero-shot NegLabel and MCM, PLP and
# linear-probe logit scores, Mahalanobis, kNN) for open_clip's ViT-L-14
# laion2b_s32b_b82k. Train the probes first:
#   python tools/extract_features.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_open-clip-vit-l14-laion2b_1xb8192_in1k.py
#   python tools/test.py configs/plp/baselines_open-clip-vit-l14-laion2b_1xb256_in1k-plp.py
# (the linear-probe scores need a probe trained with target='labels' on the
# same features, written to linear_probe below).
_base_ = ['./baselines_clip-vit-b16_1xb256_in1k-plp.py']
train_features = 'data/features/open-clip-vit-l14_laion2b/in1k_train.pt'
plp_probe = 'work_dirs/plp_open-clip-vit-l14-laion2b_1xb8192_in1k'
linear_probe = 'work_dirs/linear-probe_open-clip-vit-l14-laion2b_1xb8192_in1k'


def _probe(path, score, name):
    return dict(
        type='ProbeScorer', probe_checkpoint=path, score=score, name=name)


model = dict(
    arch='open_clip:ViT-L-14/laion2b_s32b_b82k',
    pretrained=None,  # the tag's weights, or a local file
    ood_scorers=[
        {{_base_.neglabel_scorer}},
        {{_base_.mcm_scorer}},
        _probe(plp_probe, 'msp', 'PLP-MSP'),
        _probe(plp_probe, 'max_logit', 'PLP-MaxLogit'),
        _probe(plp_probe, 'energy', 'PLP-Energy'),
        _probe(linear_probe, 'msp', 'LinearProbe-MSP'),
        _probe(linear_probe, 'energy', 'LinearProbe-Energy'),
        dict(type='MahalanobisScorer', train_features=train_features),
        dict(type='MahalanobisScorer', train_features=train_features,
             relative=True),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
