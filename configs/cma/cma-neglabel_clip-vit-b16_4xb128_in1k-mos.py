# Test a CMA fine-tuned CLIP ViT-B/16 (trained with
# configs/cma/cma_clip-vit-b16_4xb128_in1k.py, which this config inherits) with
# NegLabel and MCM on the MOS ImageNet-1k OoD benchmark. The negative
# labels are mined with the fine-tuned text tower (NegLabel paper settings).
#   python tools/test.py configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth
#   bash tools/dist_test.sh CONFIG CHECKPOINT 4
# The checkpoint replaces every weight: `--cfg-options model.pretrained=None`
# skips loading OpenAI's weights first. Validation during training runs the
# cheap scores only (NegLabelScorer(at_validation=False), the default).
_base_ = [
    './cma_clip-vit-b16_4xb128_in1k.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/models/ood_scorers.py',
]
model = dict(
    test_template='the nice {}',
    ood_scorers=[
        {{_base_.neglabel_scorer}},
        {{_base_.mcm_scorer}},
    ],
)
# replace (not merge into) the ImageNet-val test set of the training config
test_dataloader = dict(
    _delete_=True,
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset={{_base_.ood_test_dataset}})
test_evaluator = dict(_delete_=True, type='OoDMetric')
