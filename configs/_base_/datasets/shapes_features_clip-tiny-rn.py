# Cached image features of the demo shapes (train and val) from the tiny
# demo CLIP, for the probing baselines on the CPU. As PLP: the image tower's
# output before its projection, un-normalised; the tiny CLIP's tower is a
# ResNet, which (like open_clip's, where PLP's proj=None changes nothing)
# has no separate projection: its pre-projection features are its 64-d
# embeddings. The CLIP is the one trained
# by configs/demo/cma_clip-tiny-rn_1xb64_shapes.py: pass its checkpoint,
#   python tools/extract_features.py CONFIG \
#       work_dirs/cma_clip-tiny-rn_1xb64_shapes/epoch_20.pth
# (re-running with the same checkpoint reuses the files; another checkpoint
# replaces them). The train file also holds the zero-shot pseudo-labels of
# the 5-prompt PLP ensemble over the shape names.
_base_ = ['./cached_features.py']
feature_root = 'work_dirs/features/clip-tiny-rn_shapes'
train_feature_file = feature_root + '/train.pt'
val_feature_file = feature_root + '/val.pt'


def _shapes(split, num):
    return dict(
        batch_size=256,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='ShapesDataset',
            split=split,
            num_per_class=num,
            img_size=32,
            test_mode=True,
            pipeline=[dict(type='PackInputs')]))


feature_extraction = dict(
    model=dict(
        type='MultiModalClassifier',
        arch='tiny-rn-32px',
        pretrained=None,
        classnames=None,  # the dataset's shape names
        train_template='a photo of a {}',
        test_template='a photo of a {}',
        ood_scorers=[]),
    feature='pre_projection',
    dtype='float32',
    splits=dict(
        train=dict(dataloader=_shapes('train', 400),
                   out_file=train_feature_file),
        val=dict(dataloader=_shapes('val', 100), out_file=val_feature_file)),
)


train_dataloader = dict(dataset=dict(feature_file=train_feature_file))
val_dataloader = dict(dataset=dict(feature_file=val_feature_file))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator
