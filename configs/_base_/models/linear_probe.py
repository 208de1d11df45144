# PLP's probe (TMLR 2024, linear_probing.py) for PLP and supervised linear
# probing: one linear layer on cached image features, z-scored with the
# training set's mean and unbiased std (read from `stats_file`, the cached
# training features, and kept in the probe's checkpoint, so that val, test
# and OoD features are normalised the same way). A config sets the feature
# size `in_dim`, `num_classes` and `stats_file` of its cached features.
model = dict(type='LinearProbe', normalize='zscore')
