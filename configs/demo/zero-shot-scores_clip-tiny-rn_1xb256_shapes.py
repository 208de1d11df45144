# The newer zero-shot scores next to NegLabel and MCM on the CPU demo: CSP,
# AdaNeg and GL-MCM (zero-shot scores only: no probe or feature files
# needed), on the demo CLIP trained by
# configs/demo/cma_clip-tiny-rn_1xb64_shapes.py:
#   CKPT=work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/demo/cma_clip-tiny-rn_1xb64_shapes.py
#   python tools/test.py configs/demo/zero-shot-scores_clip-tiny-rn_1xb256_shapes.py $CKPT
# As the baselines config's NegLabel (which this config inherits), they
# mine from three small WordNet lists (noun.shape, noun.Tops, adj.ppl: 377
# nouns and 60 adjectives, hence conjugated phrases; 65 negatives kept) in
# 5 groups; CSP keeps its published prompt ensembles and exclusion rule,
# AdaNeg its memory and per-set streams (with 65 negatives instead of
# 10,000). Three seed repeats of NegLabel and CSP (mean ± std in the table)
# and each image's 5 most similar negatives (ood_per_image.csv); the
# contact sheets of every score and OoD set (ood_plots/contact_*.png).
# GL-MCM with its ImageNet script's lambda 0.5 and T = 1, through its
# ResNet variant (the demo CLIP's tower is a ResNet): at 32 px the
# attention pool's input is a single position, so its local term sees the
# whole image.
_base_ = ['./baselines_clip-tiny-rn_1xb256_shapes.py']
demo_lexnames = ('noun.shape', 'noun.Tops', 'adj.ppl')
model = dict(
    ood_scorers=[
        dict(type='MCMScorer', temperature=0.01),
        dict(type='NegLabelScorer', lexnames=demo_lexnames, ngroup=5,
             seed_repeats=3),
        dict(type='CSPScorer', lexnames=demo_lexnames, ngroup=5,
             seed_repeats=3),
        dict(type='AdaNegScorer', lexnames=demo_lexnames,
             num_negatives=65),
        dict(type='GLMCMScorer', lambda_local=0.5),
    ])
test_evaluator = dict(contact_sheets=True)
