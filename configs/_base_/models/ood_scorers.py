# OoD scorers in the settings of their papers, for `model.ood_scorers`:
#   ood_scorers=[{{_base_.neglabel_scorer}}, {{_base_.mcm_scorer}}]
# NegLabel (ICLR 2024): noun prompts "the nice {}", adjective prompts
# "This is a {} photo", percentile 0.95, ratio 0.15, tau 0.01, 100 groups.
neglabel_scorer = dict(
    type='NegLabelScorer',
    noun_template='the nice {}',
    adj_template='This is a {} photo',
    percentile=0.95,
    ratio=0.15,
    temperature=0.01,
    ngroup=100)
# MCM (NeurIPS 2022, eval_ood_detection.py --T 1): max softmax of the raw
# cosine, T = 1 (at T = 0.01 it would be the zero-shot MSP, MSPScorer)
mcm_scorer = dict(type='MCMScorer', temperature=1.0)
# CSP (NeurIPS 2024; CSPScorer's defaults are the published settings):
# NegLabel's score over nouns and conjugated phrases "{adjective}
# {superclass}", 8- / 4-template prompt ensembles (ID classes included),
# candidates with a cosine > 0.95 to an ID class excluded, percentile 0.95,
# ratio 0.15, tau 0.01, 100 groups.
csp_scorer = dict(
    type='CSPScorer',
    percentile=0.95,
    ratio=0.15,
    temperature=0.01,
    ngroup=100,
    max_cos=0.95)
