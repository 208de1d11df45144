# Supervised linear probing: PLP's recipe (inherited from
# configs/plp/plp_clip-vit-b16_1xb8192_in1k.py: a linear layer on the
# z-scored 768-d pre-projection features of frozen OpenAI CLIP ViT-B/16;
# Adam, lr 1e-3 * 8192 / 256, weight decay 1e-3; 100 epochs, batch 8192,
# cosine with 10% warm-up) with the true ImageNet-1k labels as targets.
#   python tools/extract_features.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
_base_ = ['../plp/plp_clip-vit-b16_1xb8192_in1k.py']
train_dataloader = dict(dataset=dict(target='labels'))
