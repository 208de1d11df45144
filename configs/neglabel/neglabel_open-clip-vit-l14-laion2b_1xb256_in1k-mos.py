# Zero-shot NegLabel (ICLR 2024) with open_clip's ViT-L-14 trained on
# LAION-2B (laion2b_s32b_b82k) on the MOS benchmark: NegLabel's setting of
# neglabel_clip-vit-b16_1xb256_in1k-mos (inherited: prompts, mining, 100
# groups, bilinear Resize(224) + CenterCrop(224), 'mos' metrics), with the
# model's own tokenizer (OpenAI's BPE for this model). NegLabel's paper has
# no open_clip figures: no published number. Needs open_clip
# (pip install "cma_ood[open_clip]"); offline, set model.pretrained to the
# downloaded weights file (docs/backbones.md):
#   python tools/test.py configs/neglabel/neglabel_open-clip-vit-l14-laion2b_1xb256_in1k-mos.py
_base_ = ['./neglabel_clip-vit-b16_1xb256_in1k-mos.py']
model = dict(
    arch='open_clip:ViT-L-14/laion2b_s32b_b82k',
    pretrained=None)  # the tag's weights (open_clip downloads), or a file
