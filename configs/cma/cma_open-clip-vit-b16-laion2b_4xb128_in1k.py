# CMA fine-tuning (CVPR 2025 recipe of cma_clip-vit-b16_4xb128_in1k,
# inherited: lam 0.001, AdamW lr 1e-5 wd 0.1, 500 warm-up iterations then
# cosine, 10 epochs, 4 GPUs x 128) of open_clip's ViT-B-16 trained on
# LAION-2B (laion2b_s34b_b88k), both towers, with its own tokenizer; the
# distributed CMA loss is unchanged. open_clip's towers run their own
# forwards (our fast ViT / text paths are openai-clip only: docs/backbones.md).
# CMA's paper fine-tunes OpenAI's weights only: no published number.
# Needs open_clip (pip install "cma_ood[open_clip]"); offline, set
# model.pretrained to the downloaded weights file:
#   bash tools/dist_train.sh configs/cma/cma_open-clip-vit-b16-laion2b_4xb128_in1k.py 4
_base_ = ['./cma_clip-vit-b16_4xb128_in1k.py']
model = dict(
    arch='open_clip:ViT-B-16/laion2b_s34b_b88k',
    pretrained=None)  # the tag's weights (open_clip downloads), or a file
