# PLP (pseudo-label probing, TMLR 2024): a linear layer on frozen OpenAI
# CLIP ViT-B/16 image embeddings of ImageNet-1k, trained on CLIP's own
# zero-shot predictions (5-prompt ensemble) instead of the true labels.
# Reference schedule: 100 epochs, batch 8192, cosine with 10% warm-up (the
# optimizer is configurable, see _base_/schedules/probe_100e.py).
#   python tools/extract_features.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
# Validation reports the probe's top-1/top-5 on ImageNet val (true labels).
# OoD scores (MSP, max-logit, energy) next to NegLabel, MCM, Mahalanobis and
# kNN: configs/plp/baselines_clip-vit-b16_1xb256_in1k-mos.py.
_base_ = [
    '../_base_/datasets/in1k_clip-vit-b16_features.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(type='LinearProbe', in_dim=512, num_classes=1000)
train_dataloader = dict(dataset=dict(target='pseudo_labels'))
