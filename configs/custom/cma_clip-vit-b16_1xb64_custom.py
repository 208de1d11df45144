# CMA fine-tuning of CLIP ViT-B/16 on your own folders (docs/custom_data.md),
# ID accuracy after every epoch, then the OoD test of the fine-tuned model
# with NegLabel and MCM:
#   python tools/train.py configs/custom/cma_clip-vit-b16_1xb64_custom.py
#   python tools/test.py configs/custom/cma_clip-vit-b16_1xb64_custom.py \
#       work_dirs/cma_clip-vit-b16_1xb64_custom/epoch_10.pth
# The schedule's lr is CMA's for a global batch of 512; --auto-scale-lr
# scales it to yours.
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/custom_folders.py',
    '../_base_/schedules/cma_10e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    classnames=None,  # the ID folder names (ClassNamesHook)
    ood_scorers=[{{_base_.neglabel_scorer}}, {{_base_.mcm_scorer}}])
