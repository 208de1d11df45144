# Supervised linear probing on the CPU demo: as
# configs/plp/plp_clip-tiny-rn_1xb256_shapes.py (inherited: PLP's recipe,
# batch 256, lr 1e-3 * 256 / 256) with the true shape labels.
#   python tools/extract_features.py configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
#   python tools/train.py configs/linear-probe/linear-probe_clip-tiny-rn_1xb256_shapes.py
_base_ = ['../plp/plp_clip-tiny-rn_1xb256_shapes.py']
train_dataloader = dict(dataset=dict(target='labels'))
