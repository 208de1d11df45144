# One OoD table on the CPU demo: zero-shot scores (MCM, NegLabel), the probes
# (PLP and supervised linear probing: MSP / energy of their logits) and the
# feature-space baselines (Mahalanobis, kNN), all on the image features
# of the demo CLIP trained by configs/demo/cma_clip-tiny-rn_1xb64_shapes.py.
#   CKPT=work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/demo/cma_clip-tiny-rn_1xb64_shapes.py
#   python tools/extract_features.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py $CKPT
#   python tools/train.py configs/plp/plp_clip-tiny-rn_1xb256_shapes.py
#   python tools/train.py configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py
#   python tools/test.py configs/demo/baselines_clip-tiny-rn_1xb256_shapes.py $CKPT
# The probes and the fitted baselines check that their cached embeddings
# come from the image tower being tested (check_encoder).
# NegLabel: the demo's text tower is trained from scratch on the shape
# prompts only (context length 24), so it mines from three small WordNet
# lists (noun.shape, noun.Tops, adj.ppl: 438 candidates, 65 kept) split into
# 5 groups rather than NegLabel's full lists and 100 groups.
_base_ = [
    '../_base_/models/clip_tiny.py',
    '../_base_/datasets/shapes_bs64.py',
    '../_base_/default_runtime.py',
]
feature_root = 'work_dirs/features/clip-tiny-rn_shapes'
train_features = feature_root + '/train.pt'
plp_probe = 'work_dirs/plp_clip-tiny-rn_1xb256_shapes'  # its last checkpoint
linear_probe = 'work_dirs/linear-probe_clip-tiny-rn_1xb256_shapes'
model = dict(
    ood_scorers=[
        dict(type='MCMScorer', temperature=0.01),
        dict(
            type='NegLabelScorer',
            lexnames=('noun.shape', 'noun.Tops', 'adj.ppl'),
            ngroup=5),
        dict(
            type='ProbeScorer',
            probe_checkpoint=plp_probe,
            score='msp',
            name='PLP-MSP'),
        dict(
            type='ProbeScorer',
            probe_checkpoint=plp_probe,
            score='energy',
            name='PLP-Energy'),
        dict(
            type='ProbeScorer',
            probe_checkpoint=linear_probe,
            score='msp',
            name='LinearProbe-MSP'),
        dict(type='MahalanobisScorer', train_features=train_features),
        # PLP's k = 1 (cosine similarity)
        dict(type='KNNScorer', train_features=train_features, k=1),
    ])
# a test-only config
train_dataloader = None
train_cfg = None
optim_wrapper = None
param_scheduler = None
val_dataloader = None
val_cfg = None
val_evaluator = None
test_cfg = dict()
