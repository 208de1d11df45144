# Probe schedule of PLP (TMLR 2024; linear_probing.py, run_plp.sh) for PLP
# and supervised linear probing, the published defaults:
# - Adam (torch.optim.Adam: weight decay is the coupled L2 penalty, not
#   AdamW's decoupled one) with weight decay 1e-3 on all parameters;
# - lr = 1e-3 * batch / 256 (linear_probing.py: get_optimizer), 0.032 at
#   the ImageNet batch of 8192; `--auto-scale-lr` keeps this rule for other
#   batch sizes (base_batch_size below), and configs with another batch set
#   the lr by the same rule;
# - 100 epochs of ceil(N / batch) iterations (shuffled, last batch kept),
#   PLP's cosine_scheduler_iter: lr rising linearly from 0 over the first
#   int(0.1 * T) of the T iterations, then a cosine to 0, set every
#   iteration (PLPWarmupCosineLR).
max_epochs = 100
optim_wrapper = dict(
    type='OptimWrapper',
    # lr = 1e-3 * 8192 / 256 for the batch of 8192
    optimizer=dict(type='Adam', lr=0.032, weight_decay=1e-3),
)
param_scheduler = [
    dict(
        type='PLPWarmupCosineLR',
        warmup_ratio=0.1,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
# the lr above is for 8192 samples per iteration
auto_scale_lr = dict(base_batch_size=8192)
