# CMA's own evaluation (ma-kjh/CMA-OoDD inference.py), the protocol behind
# the CVPR 2025 table (19.93 FPR95 / 95.13 AUROC mean on MOS): a CMA
# fine-tuned CLIP ViT-B/16 (configs/cma/cma_clip-vit-b16_4xb128_in1k.py,
# inherited) scored with
# - a FIXED file of 10,000 negative prompts, CMA's Neglabel/
#   neg_label_10000.npy (a numpy array of strings: 1,500 "This is a X photo",
#   then 8,500 "The nice X"), encoded verbatim by the fine-tuned text tower,
#   not re-mined; cma_ood does not ship it: download it from CMA's
#   repository to data/neglabel/neg_label_10000.npy (or set
#   model.ood_scorers.0.neg_labels_file);
# - ID prompts "The nice {c}" (CLIP's tokenizer lower-cases: = the base's
#   'the nice {}');
# - NegLabel = softmax([cos_ID, cos_neg] / 0.01) summed over the ID
#   columns: one softmax, no groups (ngroup=1);
# - MCM = max softmax(cos_ID) at T = 1;
# - images resized bicubic + centre crop, as in training (clip.load's
#   preprocess);
# - metrics in CMA's convention (utils/metrics.py): FPR95 interpolated at
#   TPR 0.95, AUPR by the trapezoid rule (protocol='cma').
#   python tools/test.py configs/cma/cma-neglabel-fixed_clip-vit-b16_4xb128_in1k-mos.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth
# The re-mining NegLabel protocol is cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py.
_base_ = ['./cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py']
model = dict(
    ood_scorers=[
        dict(
            type='NegLabelScorer',
            neg_labels_file='data/neglabel/neg_label_10000.npy',
            temperature=0.01,
            ngroup=1),
        {{_base_.mcm_scorer}},
    ])
test_evaluator = dict(protocol='cma')
