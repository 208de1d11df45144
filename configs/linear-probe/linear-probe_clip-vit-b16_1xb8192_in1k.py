# Supervised linear probing: PLP's recipe with the true ImageNet-1k labels
# as targets (a linear layer on frozen OpenAI CLIP ViT-B/16 embeddings;
# 100 epochs, batch 8192, cosine with 10% warm-up).
#   python tools/extract_features.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
_base_ = [
    '../_base_/datasets/in1k_clip-vit-b16_features.py',
    '../_base_/schedules/probe_100e.py',
    '../_base_/default_runtime.py',
]
model = dict(type='LinearProbe', in_dim=512, num_classes=1000)
train_dataloader = dict(dataset=dict(target='labels'))
