# AdaNeg on a CMA fine-tuned CLIP ViT-B/16 (trained with
# configs/cma/cma_clip-vit-b16_4xb128_in1k.py) on the MOS ImageNet-1k OoD
# benchmark: ./adaneg_clip-vit-b16_1xb256_in1k-mos.py (AdaNeg's prompts,
# negatives, memory and stream; the negatives are selected with the
# fine-tuned text tower, the logits use its logit scale) with CMA's test
# preprocessing, Resize(224) bicubic + CenterCrop(224), and the 'mos'
# metrics of configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py, so
# that the two differ by the scorer only. Our protocol: no published number.
#   python tools/test.py \
#       configs/adaneg/cma-adaneg_clip-vit-b16_1xb256_in1k-mos.py \
#       work_dirs/cma_clip-vit-b16_4xb128_in1k/epoch_10.pth \
#       --cfg-options model.pretrained=None
_base_ = ['./adaneg_clip-vit-b16_1xb256_in1k-mos.py']
test_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
test_evaluator = dict(protocol='mos')
