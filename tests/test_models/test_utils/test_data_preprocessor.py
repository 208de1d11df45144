"""CLIPDataPreprocessor: ClsDataPreprocessor's images, labels left on the
host (moving them to the device and back synchronised every step)."""
import pytest
import torch
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401  (registers components)
from cma_ood.models import CLIPDataPreprocessor, MultiModalClassifier
from cma_ood.models.multimodal.classifier import CLIP_MEAN, CLIP_STD

ARGS = dict(mean=CLIP_MEAN, std=CLIP_STD, to_rgb=True)


def make_batch(labels, seed=0, stacked=False):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (len(labels), 3, 8, 8), generator=g,
                         dtype=torch.uint8)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=imgs if stacked else list(imgs), data_samples=samples)


@pytest.mark.parametrize('stacked', [False, True])
@pytest.mark.parametrize('training', [False, True])
def test_images_equal_cls_data_preprocessor(stacked, training):
    ours = CLIPDataPreprocessor(**ARGS)(make_batch([0, 3, 1], 1, stacked),
                                        training)
    theirs = ClsDataPreprocessor(**ARGS)(make_batch([0, 3, 1], 1, stacked),
                                         training)
    torch.testing.assert_close(ours['inputs'], theirs['inputs'], rtol=0,
                               atol=0)
    assert [ds.gt_label.tolist() for ds in ours['data_samples']] == [[0], [3],
                                                                     [1]]


def test_labels_stay_on_the_host_images_go_to_the_device():
    # the meta device stands in for a GPU: what moves there is visible
    data = make_batch([2, 0, 2, 5])
    labels = [ds.gt_label for ds in data['data_samples']]
    out = CLIPDataPreprocessor(**ARGS).to('meta')(data, True)
    assert out['inputs'].device.type == 'meta'
    assert out['inputs'].shape == (4, 3, 8, 8)
    assert out['data_samples'] is data['data_samples']
    for ds, label in zip(out['data_samples'], labels):
        assert ds.gt_label is label and label.device.type == 'cpu'
    # mmpretrain's moves them (the copy that waits for the device)
    theirs = ClsDataPreprocessor(**ARGS).to('meta')(make_batch([2, 0]), True)
    assert {ds.gt_label.device.type
            for ds in theirs['data_samples']} == {'meta'}


def test_copies_without_blocking_by_default():
    seen = []

    class Spy(torch.Tensor):
        def to(self, *args, **kwargs):
            seen.append(kwargs.get('non_blocking'))
            return super().to(*args, **kwargs)

    for kwargs, expected in ((dict(), True), (dict(non_blocking=False),
                                              False)):
        seen.clear()
        data = make_batch([1, 2], stacked=True)
        data['inputs'] = data['inputs'].as_subclass(Spy)
        CLIPDataPreprocessor(**ARGS, **kwargs)(data, True)
        assert seen == [expected]


def test_one_hot_labels_behave_as_cls_data_preprocessor():
    # to_onehot (also switched on by batch augments) needs the labels with
    # the images: ClsDataPreprocessor's behaviour, label scores included
    kw = dict(ARGS, to_onehot=True, num_classes=6)
    ours = CLIPDataPreprocessor(**kw).to('meta')(make_batch([4, 1]), True)
    theirs = ClsDataPreprocessor(**kw).to('meta')(make_batch([4, 1]), True)
    for a, b in zip(ours['data_samples'], theirs['data_samples']):
        assert a.gt_label.device == b.gt_label.device
        assert a.gt_score.shape == b.gt_score.shape == (6, )


def test_default_of_the_classifier():
    model = MultiModalClassifier(arch='tiny-vit-32px', classnames=['a', 'b'])
    assert type(model.data_preprocessor) is CLIPDataPreprocessor
    torch.testing.assert_close(model.data_preprocessor.mean.flatten(),
                               torch.tensor(CLIP_MEAN))
    assert model.data_preprocessor.to_rgb
