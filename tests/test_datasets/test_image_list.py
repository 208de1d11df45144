"""Tests of ImageListDataset, of CustomDataset on OoD image folders and of
the MOS / OpenOOD v1.5 dataset configs (built on generated data)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import DATASETS

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.datasets import ImageListDataset, OoDConcatDataset
from cma_ood.datasets.image_list import parse_image_list_line

import _helpers  # noqa: E402  (tests/ is on sys.path)

REPO = Path(_helpers.REPO)
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


pytestmark = pytest.mark.usefixtures('single_thread')


def write_image(path: Path, seed: int = 0, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(
        0, 255, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def image_list(tmp_path):
    """An OpenOOD-style root: lists under benchmark_imglist/, images under
    images_largescale/ (with a space in one path and a line w/o label)."""
    root = tmp_path / 'openood'
    images = root / 'images_largescale'
    rel = ['ninco/a/x.png', 'ninco/b dir/y z.png', 'ninco/c.png']
    for i, r in enumerate(rel):
        write_image(images / r, i)
    lst = root / 'benchmark_imglist' / 'imagenet' / 'test_ninco.txt'
    lst.parent.mkdir(parents=True)
    lst.write_text(f'{rel[0]} 0\n\n{rel[1]} 3\n{rel[2]}\n')
    return dict(root=root, images=images, rel=rel, list=lst)


def test_parse_line():
    assert parse_image_list_line('a/b.jpg 7\n') == ('a/b.jpg', 7)
    assert parse_image_list_line('a b/c d.jpg -1') == ('a b/c d.jpg', -1)
    assert parse_image_list_line('a/b.jpg') == ('a/b.jpg', None)
    assert parse_image_list_line('a/b c.jpg') == ('a/b c.jpg', None)


def test_image_list_reads_images(image_list):
    ds = DATASETS.build(
        dict(
            type='ImageListDataset',
            data_root=str(image_list['root']),
            ann_file='benchmark_imglist/imagenet/test_ninco.txt',
            data_prefix='images_largescale',
            pipeline=PIPELINE,
            test_mode=True))
    assert isinstance(ds, ImageListDataset)
    assert len(ds) == 3
    paths = [ds.get_data_info(i)['img_path'] for i in range(3)]
    assert [Path(p) for p in paths] == [
        image_list['images'] / r for r in image_list['rel']
    ]
    assert [ds.get_data_info(i)['gt_label'] for i in range(3)] == [-1] * 3
    item = ds[1]
    assert item['inputs'].shape == (3, 12, 10)
    assert item['data_samples'].gt_label.tolist() == [-1]


def test_image_list_with_labels(image_list, tmp_path):
    lst = tmp_path / 'labelled.txt'
    lst.write_text(f'{image_list["rel"][0]} 0\n{image_list["rel"][1]} 3\n')
    ds = ImageListDataset(
        ann_file=str(lst),  # absolute: not joined to data_root
        data_root=str(image_list['root']),
        data_prefix='images_largescale',
        with_label=True,
        pipeline=PIPELINE)
    assert [ds.get_data_info(i)['gt_label'] for i in range(2)] == [0, 3]
    assert ds[0]['data_samples'].gt_label.tolist() == [0]
    with pytest.raises(ValueError, match=r'test_ninco.txt:4: no integer'):
        ImageListDataset(
            ann_file=str(image_list['list']),
            data_prefix=str(image_list['images']),
            with_label=True)


def test_image_list_errors(image_list, tmp_path):
    with pytest.raises(FileNotFoundError, match='test_missing.txt'):
        ImageListDataset(
            data_root=str(image_list['root']),
            ann_file='benchmark_imglist/imagenet/test_missing.txt',
            data_prefix='images_largescale')
    with pytest.raises(FileNotFoundError, match='no_such_images'):
        ImageListDataset(
            data_root=str(image_list['root']),
            ann_file='benchmark_imglist/imagenet/test_ninco.txt',
            data_prefix='no_such_images')
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n \n')
    with pytest.raises(ValueError, match='lists no images'):
        ImageListDataset(
            ann_file=str(empty), data_prefix=str(image_list['images']))
    with pytest.raises(ValueError, match='ann_file'):
        ImageListDataset(ann_file='')
    # lazy_init defers the check to full_init
    ds = ImageListDataset(
        ann_file=str(tmp_path / 'later.txt'), lazy_init=True)
    with pytest.raises(FileNotFoundError, match='later.txt'):
        ds.full_init()


def test_custom_dataset_scans_ood_folder_recursively(tmp_path):
    root = tmp_path / 'Textures'
    expected = [
        write_image(root / 'banded' / 'a.jpg', 0),
        write_image(root / 'banded' / 'b.png', 1),
        write_image(root / 'dotted' / 'deeper' / 'c.jpg', 2),
        write_image(root / 'top.jpeg', 3),
    ]
    (root / 'labels').mkdir()
    (root / 'labels' / 'train1.txt').write_text('banded/a.jpg\n')
    ds = DATASETS.build(
        dict(
            type='CustomDataset',
            data_root=str(root),
            with_label=False,
            pipeline=PIPELINE))
    found = sorted(Path(ds.get_data_info(i)['img_path'])
                   for i in range(len(ds)))
    assert found == sorted(expected)
    sample = ds[0]['data_samples']
    assert 'gt_label' not in sample  # OoDMetric treats it as -1


# ---------------------------------------------------------------- configs
def fake_imagenet(root: Path, n=3):
    """ImageNet val in the meta/val.txt layout with ``n`` images."""
    lines = []
    for i in range(n):
        name = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
        write_image(root / 'val' / name, i)
        lines.append(f'{name} {i * 7}')
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    (root / 'meta' / 'val.txt').write_text('\n'.join(lines) + '\n')


def check_pipeline(pipeline, interpolation='bicubic'):
    """CLIP's test pipeline of the ImageNet base, with the given resize
    interpolation (bicubic: CLIP/CMA; bilinear: MCM/NegLabel)."""
    clip_cfg = Config.fromfile(
        str(REPO / 'configs/_base_/datasets/imagenet_bs128_clip.py'))
    expected = clip_cfg.test_pipeline
    expected[1]['interpolation'] = interpolation
    assert pipeline == expected


#: (config, resize interpolation, evaluator)
MOS_CONFIGS = [
    ('configs/neglabel/neglabel_clip-vit-b16_1xb256_in1k-mos.py', 'bilinear',
     dict(type='OoDMetric')),
    ('configs/mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py', 'bilinear',
     dict(type='OoDMetric')),
    ('configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py', 'bicubic',
     dict(type='OoDMetric')),
    ('configs/cma/cma-neglabel-fixed_clip-vit-b16_4xb128_in1k-mos.py',
     'bicubic', dict(type='OoDMetric', protocol='cma')),
]


@pytest.mark.parametrize('path,interpolation,evaluator', MOS_CONFIGS)
def test_mos_configs(path, interpolation, evaluator, tmp_path):
    cfg = Config.fromfile(str(REPO / path))
    assert cfg.test_evaluator == evaluator
    ds_cfg = cfg.test_dataloader.dataset
    assert ds_cfg.type == 'OoDConcatDataset'
    assert list(ds_cfg.ood_datasets) == [
        'iNaturalist', 'SUN', 'Places', 'Textures'
    ]
    assert ds_cfg.id_dataset.data_root == 'data/imagenet'
    for name, sub in ds_cfg.ood_datasets.items():
        assert sub.type == 'CustomDataset' and sub.with_label is False
        assert sub.data_root == f'data/ood/{name}'
        assert 'pipeline' not in sub
    assert 'pipeline' not in ds_cfg.id_dataset
    # one pipeline for every set of the benchmark
    check_pipeline(ds_cfg.pipeline, interpolation)
    if path != MOS_CONFIGS[0][0]:
        return
    # build it on generated data, repointed as docs/data_preparation.md says
    fake_imagenet(tmp_path / 'imagenet')
    overrides = {
        'test_dataloader.dataset.id_dataset.data_root':
        str(tmp_path / 'imagenet')
    }
    for i, name in enumerate(ds_cfg.ood_datasets):
        write_image(tmp_path / 'ood' / name / 'images' / f'{i}.jpg', i)
        write_image(tmp_path / 'ood' / name / 'images' / 'sub' / 'b.jpg', i)
        overrides[f'test_dataloader.dataset.ood_datasets.{name}.data_root'] \
            = str(tmp_path / 'ood' / name)
    cfg.merge_from_dict(overrides)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert isinstance(dataset, OoDConcatDataset)
    assert dataset.source_sizes() == dict(
        ID=3, iNaturalist=2, SUN=2, Places=2, Textures=2)
    assert len(dataset.metainfo['classes']) == 1000
    item = dataset[5]  # ID 0-2, iNaturalist 3-4, SUN 5-6
    assert item['inputs'].shape == (3, 224, 224)
    assert item['data_samples'].ood_source == 'SUN'
    assert dataset[1]['data_samples'].gt_label.tolist() == [7]


OPENOOD_SETS = ['ssb_hard', 'ninco', 'inaturalist', 'textures', 'openimage_o']


def test_openood_config(tmp_path):
    path = 'configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-openood.py'
    cfg = Config.fromfile(str(REPO / path))
    assert cfg.test_evaluator == dict(type='OoDMetric', protocol='openood')
    ds_cfg = cfg.test_dataloader.dataset
    assert ds_cfg.type == 'OoDConcatDataset'
    assert list(ds_cfg.ood_datasets) == OPENOOD_SETS
    assert ds_cfg.ood_groups == dict(
        near=['ssb_hard', 'ninco'],
        far=['inaturalist', 'textures', 'openimage_o'])
    assert ds_cfg.id_dataset.type == 'ImageNet'
    assert ds_cfg.id_dataset.split == 'val'
    for name, sub in ds_cfg.ood_datasets.items():
        assert sub.type == 'ImageListDataset' and sub.with_label is False
        assert sub.data_root == 'data/openood'
        assert sub.ann_file == f'benchmark_imglist/imagenet/test_{name}.txt'
        assert sub.data_prefix == 'images_largescale'
        assert 'pipeline' not in sub
    check_pipeline(ds_cfg.pipeline)
    # the training part of the CMA config is untouched
    assert cfg.train_dataloader.dataset.type == 'ImageNet'
    assert cfg.val_evaluator.type == 'Accuracy'

    # build it on a generated OpenOOD tree
    root = tmp_path / 'openood'
    for i, name in enumerate(OPENOOD_SETS):
        rel = f'{name}/img_{i}.png'
        write_image(root / 'images_largescale' / rel, i)
        lst = root / 'benchmark_imglist' / 'imagenet' / f'test_{name}.txt'
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text(f'{rel} -1\n')
    fake_imagenet(tmp_path / 'imagenet', n=2)
    overrides = {
        'test_dataloader.dataset.id_dataset.data_root':
        str(tmp_path / 'imagenet')
    }
    for name in OPENOOD_SETS:
        overrides[f'test_dataloader.dataset.ood_datasets.{name}.data_root'] \
            = str(root)
    cfg.merge_from_dict(overrides)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert dataset.source_sizes() == dict(ID=2, **{n: 1 for n in
                                                   OPENOOD_SETS})
    assert dataset.metainfo['ood_groups']['near'] == ['ssb_hard', 'ninco']
    item = dataset[6]
    assert item['data_samples'].ood_source == 'openimage_o'
    assert item['data_samples'].gt_label.tolist() == [-1]
    assert item['inputs'].dtype == torch.uint8


def test_openood_config_missing_list_is_clear(tmp_path):
    cfg = Config.fromfile(
        str(REPO / 'configs/_base_/datasets/imagenet_ood_openood_v1.5.py'))
    sub = cfg.test_dataloader.dataset.ood_datasets.ninco
    sub.data_root = str(tmp_path / 'openood')
    with pytest.raises(FileNotFoundError, match='test_ninco.txt'):
        DATASETS.build(sub)


# ------------------------------------------ preprocessing vs the papers
def smooth_jpeg(path: Path, size, seed):
    """A photo-like JPEG (smooth colour field plus noise) of ``size``."""
    from PIL import Image
    w, h = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(
        rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8))
    arr = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=float)
    arr = np.clip(arr + rng.normal(0, 20, arr.shape), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
    return path


@pytest.mark.parametrize('base,interpolation', [
    ('test_pipeline_bilinear', 'BILINEAR'),  # MCM / NegLabel
    ('test_pipeline', 'BICUBIC'),  # clip.load's preprocess (CMA)
])
def test_test_pipelines_equal_the_published_torchvision_ones(
        tmp_path, base, interpolation):
    """Our test pipelines give bit-identical pixels to torchvision's
    Resize(224, interpolation) + CenterCrop(224) on PIL images (MCM's
    utils/train_eval_util.py, NegLabel's ood_dataset.py, CLIP's
    preprocess), for landscape, portrait, odd and near-224 sizes."""
    import torchvision.transforms as T
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from PIL import Image
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(
        str(REPO / 'configs/_base_/datasets/pipelines/clip.py'))
    ours = Compose(cfg[base])
    ref = T.Compose([
        T.Resize(224, interpolation=getattr(T.InterpolationMode,
                                            interpolation)),
        T.CenterCrop(224), T.PILToTensor()])
    sizes = [(500, 375), (333, 500), (640, 427), (231, 229), (224, 300),
             (517, 389)]
    for i, size in enumerate(sizes):
        path = smooth_jpeg(tmp_path / f'{i}.jpg', size, i)
        got = ours(dict(img_path=str(path)))['inputs']  # BGR, CHW, uint8
        expected = ref(Image.open(path).convert('RGB'))
        assert torch.equal(got.flip(0), expected), size
