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
# MCM: max softmax of cosine / 0.01
mcm_scorer = dict(type='MCMScorer', temperature=0.01)
