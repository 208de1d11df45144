# CLIP ViT-B/16 with OpenAI's weights as a multi-modal classifier trained
# with the CMA loss (paper setting lam = 0.001).
model = dict(
    type='MultiModalClassifier',
    arch='ViT-B/16',
    pretrained='openai',  # or a local .pt/.pth file, or None (random init)
    classnames='imagenet',  # mmpretrain's IMAGENET_SIMPLE_CATEGORIES
    train_template='a photo of a {}',
    test_template='the nice {}',
    loss=dict(type='CMALoss', lam=0.001),
    ood_scorers=[dict(type='MCMScorer')],  # MCM, T = 1 on the cosine
    # torch.compile the encoders when a GPU is present (about 1.7x faster
    # training, see docs/benchmarks.md); False to switch it off
    compile='auto',
)
