# CMA fine-tuning of CLIP ViT-B/16 on ImageNet-1k (CVPR 2025 recipe):
# OpenAI weights, lam 0.001, AdamW lr 1e-5 wd 0.1, 500 warm-up iterations
# then cosine, 10 epochs, 4 GPUs x 128 = global batch 512. Under DDP the
# CMA loss gathers embeddings from all ranks, so the objective is the
# published single-process one over all 512 pairs.
#   bash tools/dist_train.sh configs/cma/cma_clip-vit-b16_4xb128_in1k.py 4
# The OoD test configs of the trained model (cma-neglabel*_...py) inherit
# the same bases and replace this test set by an OoD benchmark.
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/datasets/imagenet_bs128_clip.py',
    '../_base_/schedules/cma_10e.py',
    '../_base_/default_runtime.py',
]
# tools/test.py on this config: the ID accuracy on ImageNet val
test_dataloader = {{_base_.val_dataloader}}
test_evaluator = {{_base_.val_evaluator}}
