"""Demo shapes data and the multi-source OoD test set."""
import numpy as np
import pytest
import torch

import cma_ood  # noqa: F401
from cma_ood.datasets import OoDConcatDataset, ShapesDataset
from cma_ood.datasets.shapes import ID_SHAPES, NEAR_OOD_SHAPES

PIPE = [dict(type='PackInputs')]


def test_shapes_are_deterministic_and_labelled():
    a = ShapesDataset('train', num_per_class=3, pipeline=PIPE)
    b = ShapesDataset('train', num_per_class=3, pipeline=PIPE)
    assert len(a) == 3 * len(ID_SHAPES)
    assert a.metainfo['classes'] == ID_SHAPES
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x['inputs'], y['inputs'])
        assert x['inputs'].shape == (3, 32, 32)
        assert x['inputs'].dtype == torch.uint8
        assert x['data_samples'].gt_label.item() == i // 3
    # splits use different images of the same classes
    test = ShapesDataset('test', num_per_class=3, pipeline=PIPE)
    assert not torch.equal(test[0]['inputs'], a[0]['inputs'])


@pytest.mark.parametrize('split', ['near_ood', 'textures', 'noise'])
def test_ood_splits_have_no_id_labels(split):
    ds = ShapesDataset(split, num_per_class=2, pipeline=PIPE)
    n = 2 * (len(NEAR_OOD_SHAPES) if split == 'near_ood' else 1)
    assert len(ds) == n
    assert all(ds[i]['data_samples'].gt_label.item() == -1 for i in range(n))


def test_images_vary_in_colour_and_position():
    ds = ShapesDataset('train', num_per_class=20)
    imgs = np.stack([ds.get_data_info(i)['img'] for i in range(20)])
    # the same class in 20 different colourings/placements
    assert imgs.reshape(20, -1).std(axis=0).mean() > 30


def test_bad_arguments():
    with pytest.raises(ValueError, match='unknown split'):
        ShapesDataset('validation')
    with pytest.raises(ValueError, match='num_per_class'):
        ShapesDataset('train', num_per_class=0)


def _concat(**kw):
    return OoDConcatDataset(
        id_dataset=dict(type='ShapesDataset', split='test', num_per_class=2,
                        pipeline=PIPE),
        ood_datasets=dict(
            near=dict(type='ShapesDataset', split='near_ood',
                      num_per_class=1, pipeline=PIPE),
            tex=ShapesDataset('textures', num_per_class=3, pipeline=PIPE)),
        **kw)


def test_concat_tags_every_sample_with_its_source():
    ds = _concat(ood_groups=dict(far=['tex']))
    sizes = {'ID': 12, 'near': 4, 'tex': 3}
    assert ds.source_sizes() == sizes and len(ds) == 19
    sources = [ds[i]['data_samples'].ood_source for i in range(len(ds))]
    assert sources == ['ID'] * 12 + ['near'] * 4 + ['tex'] * 3
    assert [ds[i]['data_samples'].ood_index
            for i in range(len(ds))] == list(range(19))
    # items equal those of the member datasets
    direct = ShapesDataset('textures', num_per_class=3, pipeline=PIPE)[1]
    assert torch.equal(ds[17]['inputs'], direct['inputs'])
    assert ds[-1]['data_samples'].ood_index == 18
    meta = ds.metainfo
    assert meta['classes'] == ID_SHAPES
    assert meta['ood_sources'] == ('ID', 'near', 'tex')
    assert meta['ood_groups'] == {'far': ['tex']}
    with pytest.raises(IndexError):
        ds[19]


def test_concat_errors_name_the_set():
    with pytest.raises(ValueError, match="unknown OoD sets \\['nope'\\]"):
        _concat(ood_groups=dict(far=['nope']))
    with pytest.raises(ValueError, match='clashes'):
        _concat(id_name='near')
    with pytest.raises(ValueError, match='at least one'):
        OoDConcatDataset(id_dataset=ShapesDataset('test', 1),
                         ood_datasets={})

    class Empty(torch.utils.data.Dataset):
        def __len__(self):
            return 0

    with pytest.raises(ValueError, match="'empty' dataset .* is empty"):
        OoDConcatDataset(id_dataset=ShapesDataset('test', 1),
                         ood_datasets=dict(empty=Empty()))


def test_concat_shared_pipeline_applies_to_every_config():
    """``pipeline=`` preprocesses every set given as a config alike."""
    resize = [dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]
    ds = OoDConcatDataset(
        id_dataset=dict(type='ShapesDataset', split='test', num_per_class=1),
        ood_datasets=dict(
            near=dict(type='ShapesDataset', split='near_ood',
                      num_per_class=1)),
        pipeline=resize)
    for i in range(len(ds)):
        assert ds[i]['inputs'].shape == (3, 16, 16)
    direct = ShapesDataset('near_ood', num_per_class=1, pipeline=resize)
    assert torch.equal(ds[len(ds) - 1]['inputs'], direct[len(direct) - 1]
                       ['inputs'])


def test_concat_shared_pipeline_conflicts_are_errors():
    with pytest.raises(ValueError, match="OoD set 'near' has a pipeline"):
        OoDConcatDataset(
            id_dataset=dict(type='ShapesDataset', split='test',
                            num_per_class=1),
            ood_datasets=dict(near=dict(type='ShapesDataset',
                                        split='near_ood', num_per_class=1,
                                        pipeline=PIPE)),
            pipeline=PIPE)
    with pytest.raises(ValueError, match="ID set 'ID' is a built"):
        OoDConcatDataset(
            id_dataset=ShapesDataset('test', 1),
            ood_datasets=dict(near=dict(type='ShapesDataset',
                                        split='near_ood', num_per_class=1)),
            pipeline=PIPE)


def test_redraw_shape_draws_the_same_kind_anew_from_the_global_seed():
    """RedrawShape replaces a sample by a new drawing of its own shape
    (or far-OoD kind), seeded by numpy's global generator, which the
    training loop seeds per (seed, epoch, sample)."""
    from cma_ood.datasets import RedrawShape
    from cma_ood.datasets.shapes import render_far_ood, render_shape
    redraw = RedrawShape()
    for split in ('train', 'textures'):
        ds = ShapesDataset(split=split, num_per_class=2, img_size=24)
        info = ds.get_data_info(1)
        original = info['img'].copy()
        np.random.seed(7)
        a = redraw(dict(info))['img']
        np.random.seed(7)
        b = redraw(dict(info))['img']
        np.random.seed(8)
        c = redraw(dict(info))['img']
        assert a.shape == original.shape == (24, 24, 3)
        assert np.array_equal(a, b)  # reproducible from the seed
        assert not np.array_equal(a, c) and not np.array_equal(a, original)
        # it is the drawing of the sample's kind with the stated seeds
        np.random.seed(7)
        rng = np.random.default_rng(
            np.random.randint(0, 2**32, size=4, dtype=np.uint64))
        kind = info['render_kind']
        want = render_far_ood(kind, rng, 24) if split == 'textures' else \
            render_shape(kind, rng, 24)
        assert np.array_equal(a, want)
    assert ShapesDataset(split='train').get_data_info(0)['render_kind'] == \
        ID_SHAPES[0]
    with pytest.raises(KeyError, match='render_kind'):
        redraw(dict(img=np.zeros((4, 4, 3), np.uint8)))
