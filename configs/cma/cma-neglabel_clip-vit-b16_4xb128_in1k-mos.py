# Test a CMA fine-tuned CLIP ViT-B/16 (trained with
# configs/cma/cma_clip-vit-b16_4xb128_in1k.py, whose bases this config
# inherits: the same model, training data and schedule) with NegLabel and
# MCM on the MOS ImageNet-1k OoD benchmark. The negative labels are mined
# with the fine-tuned text tower (NegLabel paper settings).
#   python tools/test.py configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth
#   bash tools/dist_test.sh CONFIG CHECKPOINT 4
# The checkpoint replaces every weight: `--cfg-options model.pretrained=None`
# skips loading OpenAI's weights first. Validation during training runs the
# cheap scores only (NegLabelScorer(at_validation=False), the default).
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/imagenet_bs128_clip.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/schedules/cma_10e.py',
    '../_base_/default_runtime.py',
]
# ID prompts: the base's test_template 'the nice {}'
model = dict(ood_scorers=[{{_base_.neglabel_scorer}}, {{_base_.mcm_scorer}}])
# CLIP's bicubic preprocessing, as in CMA's training
test_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
