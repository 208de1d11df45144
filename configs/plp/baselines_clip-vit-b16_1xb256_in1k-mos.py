# One OoD table for frozen OpenAI CLIP ViT-B/16 on the MOS ImageNet-1k
# benchmark: zero-shot NegLabel and MCM, PLP and supervised linear probing
# (MSP / max-logit / energy of their logits) and the feature-space
# baselines Mahalanobis and kNN on the cached ImageNet-1k training
# embeddings. Steps:
#   python tools/extract_features.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/plp/plp_clip-vit-b16_1xb8192_in1k.py
#   python tools/train.py configs/linear-probe/linear-probe_clip-vit-b16_1xb8192_in1k.py
#   python tools/test.py configs/plp/baselines_clip-vit-b16_1xb256_in1k-mos.py
# The probes and the fitted baselines refuse features of another image
# tower (check_encoder): for CMA-fine-tuned weights extract features with
# its checkpoint and train the probes on those. They work on the tower's
# pre-projection features (ln_post of the class token), which they read
# off the classifier's forward with a hook. The zero-shot setting is
# NegLabel's (inherited: OpenAI weights, ImageNet class names, ID prompts
# "the nice {}", the benchmark and its 'mos' metrics), with CLIP's bicubic
# preprocessing, which the probes' features are extracted with.
_base_ = ['../neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py']
train_features = 'data/features/clip-vit-b16_openai/in1k_train.pt'
plp_probe = 'work_dirs/plp_clip-vit-b16_1xb8192_in1k'  # its last checkpoint
linear_probe = 'work_dirs/linear-probe_clip-vit-b16_1xb8192_in1k'


def _probe(path, score, name):
    return dict(
        type='ProbeScorer', probe_checkpoint=path, score=score, name=name)


model = dict(
    ood_scorers=[
        {{_base_.neglabel_scorer}},
        {{_base_.mcm_scorer}},
        _probe(plp_probe, 'msp', 'PLP-MSP'),
        _probe(plp_probe, 'max_logit', 'PLP-MaxLogit'),
        _probe(plp_probe, 'energy', 'PLP-Energy'),
        _probe(linear_probe, 'msp', 'LinearProbe-MSP'),
        _probe(linear_probe, 'energy', 'LinearProbe-Energy'),
        # PLP's settings on the cached pre-projection features: class
        # means, the mean of the per-class unbiased covariances, inverted;
        # kNN with k = 1 on the cosine similarity
        dict(type='MahalanobisScorer', train_features=train_features),
        dict(
            type='MahalanobisScorer',
            train_features=train_features,
            relative=True),
        dict(type='KNNScorer', train_features=train_features, k=1),
    ],
)
test_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
