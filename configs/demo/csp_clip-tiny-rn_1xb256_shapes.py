# CSP next to NegLabel and MCM on the CPU demo, zero-shot scores only (no
# probe or feature files needed), on the demo CLIP trained by
# configs/demo/cma_clip-tiny-rn_1xb64_shapes.py:
#   CKPT=work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/demo/cma_clip-tiny-rn_1xb64_shapes.py
#   python tools/test.py configs/demo/csp_clip-tiny-rn_1xb256_shapes.py $CKPT
# As the baselines config's NegLabel (which this config inherits), both
# mine from three small WordNet lists (noun.shape, noun.Tops, adj.ppl: 377
# nouns and 60 adjectives, hence conjugated phrases; 65 negatives kept) in
# 5 groups; CSP keeps its published prompt ensembles and exclusion rule.
# Three seed repeats per score (ood_scores 'CSP@seed=1' ...) and each
# image's 5 most similar negatives (ood_details) come with them.
_base_ = ['./baselines_clip-tiny-rn_1xb256_shapes.py']
demo_lexnames = ('noun.shape', 'noun.Tops', 'adj.ppl')
model = dict(
    ood_scorers=[
        dict(type='MCMScorer', temperature=0.01),
        dict(type='NegLabelScorer', lexnames=demo_lexnames, ngroup=5,
             seed_repeats=3),
        dict(type='CSPScorer', lexnames=demo_lexnames, ngroup=5,
             seed_repeats=3),
    ])
