# Zero-shot OoD detection on your own folders (docs/custom_data.md): OpenAI's
# CLIP ViT-B/16 scores the ID test folders and every OoD folder of
# configs/_base_/datasets/custom_folders.py with NegLabel and MCM.
#   python tools/test.py configs/custom/neglabel_clip-vit-b16_1xb64_custom.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/custom_folders.py',
    '../_base_/default_runtime.py',
]
model = dict(
    classnames=None,  # the ID folder names (ClassNamesHook)
    ood_scorers=[{{_base_.neglabel_scorer}}, {{_base_.mcm_scorer}}])
# a test-only config: no training, no validation
train_dataloader = None
val_dataloader = None
val_evaluator = None
test_cfg = dict()
