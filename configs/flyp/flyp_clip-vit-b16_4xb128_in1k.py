# FLYP baseline: the CMA recipe with lam = 0, i.e. the symmetric CLIP
# contrastive loss alone.
_base_ = ['../cma/cma_clip-vit-b16_4xb128_in1k.py']
model = dict(loss=dict(type='CMALoss', lam=0.0))
