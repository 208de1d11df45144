# Test a CMA fine-tuned CLIP ViT-B/16 (trained with
# configs/cma/cma_clip-vit-b16_4xb128_in1k.py) with NegLabel and MCM on the
# OpenOOD v1.5 ImageNet-1k benchmark (near-OoD: SSB-hard, NINCO; far-OoD:
# iNaturalist, Textures, OpenImage-O; reported per set and as near/far
# means), in OpenOOD v1.5's metric convention (protocol='openood'). The
# negative labels are mined with the fine-tuned text tower (NegLabel paper
# settings). As cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py, whose bases
# this config inherits with the OpenOOD benchmark in place of MOS.
#   python tools/test.py configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-openood.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth
#   bash tools/dist_test.sh CONFIG CHECKPOINT 4
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/models/ood_scorers.py',
    '../_base_/datasets/imagenet_bs128_clip.py',
    '../_base_/datasets/imagenet_ood_openood_v1.5.py',
    '../_base_/schedules/cma_10e.py',
    '../_base_/default_runtime.py',
]
model = dict(ood_scorers=[{{_base_.neglabel_scorer}}, {{_base_.mcm_scorer}}])
test_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
