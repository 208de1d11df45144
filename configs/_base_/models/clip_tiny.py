# A tiny CLIP (ResNet (1,1,1,1) width 16 at 32 px, 2-layer text tower) trained
# from scratch: the CPU demo and tests.
model = dict(
    type='MultiModalClassifier',
    arch='tiny-rn-32px',
    pretrained=None,
    classnames=None,  # taken from the dataset by ClassNamesHook
    train_template='a photo of a {}',
    # the text tower is trained from scratch on the training prompt only
    test_template='a photo of a {}',
    loss=dict(type='CMALoss', lam=0.001),
    ood_scorers=[
        dict(type='MCMScorer'),  # MCM's T = 1 on the cosine
        dict(type='MSPScorer'),
        dict(type='EnergyScorer'),
    ],
)
