# Zero-shot AdaNeg (NeurIPS 2024), task-adaptive negative proxies, with
# OpenAI's CLIP ViT-B/16 on the MOS ImageNet-1k OoD benchmark, as
# OpenOOD-VLM's scripts/ood/adaneg/imagenet.sh (postprocessor
# ttapromptnoadagap = TTAPromptPostprocessor_noadagap; network
# fixedclip_negoodprompt = clip_fixed_ood_prompt.py):
# - ID prompts "The nice {}." (text_prompt=nice); 10,000 negatives, nouns
#   "The nice {}.", adjectives "This is a {} photo.", AdaNeg's selection
#   (AdaNegScorer; docs/scorers_adaneg_glmcm.md);
# - memory: thres 0.5, gap 0.5, memleng 10 (only 9 image entries fill, as
#   published), 5 groups, lambda 0.1, in_score=combine, samada=False;
#   logits 100 * cos (the model's logit scale);
# - the stream: per OoD set, [OoD set, all 50,000 ID images] shuffled
#   (stream_seed) and scored 256 at a time, the memory reset per set; ID
#   accuracy is the zero-shot classifier's;
# - preprocessing Resize(256) bicubic + CenterCrop(224) (OpenOOD's
#   TestStandardPreProcessor with pre_size 256, CLIP mean/std);
# - metrics: OpenOOD's compute_all_metrics (protocol='openood').
# The streams run inside OoDMetric after the test pass (a few seconds per
# OoD set on a GPU). Sample-adaptive proxies (samada=True):
#   --cfg-options model.ood_scorers.0.proxy=sample
#   python tools/test.py configs/adaneg/adaneg_clip-vit-b16_1xb256_in1k-mos.py
_base_ = [
    '../_base_/models/clip_vit-b16.py',
    '../_base_/datasets/pipelines/clip.py',
    '../_base_/datasets/imagenet_ood_mos.py',
    '../_base_/default_runtime.py',
]
adaneg_scorer = dict(
    type='AdaNegScorer',
    noun_template='The nice {}.',
    adj_template='This is a {} photo.',
    num_negatives=10000,
    level=0.95,
    ngroup=5,
    seed=0,
    memory_length=10,
    fill_last_slot=False,
    thres=0.5,
    gap=0.5,
    beta=5,  # the script's beta=5.5, truncated by int()
    proxy='task',
    score_mode='combine',
    lambda_vanilla=0.1,
    entropy_precision='half',
    stream_seed=0,
    id_ratio=None,  # all ID images in every stream
    stream_batch_size=256)
model = dict(test_template='The nice {}.', ood_scorers=[adaneg_scorer])
# OpenOOD's Resize(pre_size=256, bicubic) + CenterCrop(224)
adaneg_test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=adaneg_test_pipeline))
test_evaluator = dict(protocol='openood')
test_cfg = dict()
