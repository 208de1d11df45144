"""OoD benchmarks beyond MOS: the CIFAR benchmarks
(configs/_base_/datasets/cifar_ood.py) and the MCM configs on them, run on
generated files in CIFAR's own format through mmpretrain's CIFAR10 /
CIFAR100 datasets; the PLP study's six ImageNet-1k OoD sets."""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.datasets.categories import (CIFAR10_CATEGORIES,
                                            CIFAR100_CATEGORIES)

from _helpers import REPO

N_TEST = 40


def _write(path, **entry):
    with open(path, 'wb') as f:
        pickle.dump(entry, f)


@pytest.fixture()
def cifar_roots(tmp_path, monkeypatch):
    """CIFAR-10 and CIFAR-100 "python version" folders with N_TEST random
    test images each (and one-image training files); mmpretrain checks the
    real archives' md5 sums, which generated files cannot match."""
    rng = np.random.default_rng(0)
    roots = {}
    for cls, labels_key, names_key, names, folder, files, meta in (
            (CIFAR10, 'labels', 'label_names', CIFAR10_CATEGORIES,
             'cifar-10-batches-py',
             [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch'],
             'batches.meta'),
            (CIFAR100, 'fine_labels', 'fine_label_names',
             CIFAR100_CATEGORIES, 'cifar-100-python', ['train', 'test'],
             'meta')):
        root = tmp_path / cls.__name__.lower()
        (root / folder).mkdir(parents=True)
        for name in files:
            n = N_TEST if name.startswith('test') else 1
            _write(root / folder / name,
                   data=rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   **{labels_key: list(rng.integers(0, len(names), n))})
        _write(root / folder / meta, **{names_key: list(names)})
        monkeypatch.setattr(cls, 'train_list',
                            [[f, None] for f in files if 'test' not in f])
        monkeypatch.setattr(cls, 'test_list', [[f, None] for f in files
                                               if 'test' in f])
        monkeypatch.setattr(cls, 'meta', dict(cls.meta, md5=None))
        roots[cls.__name__] = str(root)
    return roots


@pytest.mark.parametrize('id_set,ood_set', [('cifar10', 'cifar100'),
                                            ('cifar100', 'cifar10')])
def test_mcm_on_the_cifar_benchmarks(tmp_path, cifar_roots, id_set,
                                     ood_set):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'mcm',
                 f'mcm_clip-vit-b16_1xb256_{id_set}.py'))
    dataset = cfg.test_dataloader.dataset
    assert dataset.id_dataset.type == id_set.upper()
    assert list(dataset.ood_datasets) == [ood_set]
    # the 32x32 RGB arrays are not flipped as BGR files would be
    assert cfg.data_preprocessor.to_rgb is False
    dataset.id_dataset.data_root = cifar_roots[id_set.upper()]
    dataset.ood_datasets[ood_set].data_root = cifar_roots[ood_set.upper()]
    dataset.pipeline[0].scale = 32  # the tiny test model's input size
    dataset.pipeline[1].crop_size = 32
    cfg.model.update(arch='tiny-vit-32px', pretrained=None)
    cfg.test_dataloader.update(batch_size=16, num_workers=0)
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert metrics[f'ood/MCM/{ood_set}/AUROC'] >= 0
    assert 0 <= metrics['ood/accuracy/top1'] <= 100
    model = runner.model
    assert model.data_preprocessor.to_rgb is False
    names = (CIFAR10_CATEGORIES if id_set == 'cifar10' else
             CIFAR100_CATEGORIES)
    assert model.classnames == [n.replace('_', ' ') for n in names]
    # the batch the model saw is the dataset's RGB image, CLIP-normalised
    sample = runner.test_dataloader.dataset[0]
    inputs = model.data_preprocessor(
        dict(inputs=[sample['inputs']],
             data_samples=[sample['data_samples']]))['inputs'][0]
    mean = torch.tensor(cfg.data_preprocessor.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(3, 1, 1)
    torch.testing.assert_close(inputs,
                               (sample['inputs'].float() - mean) / std)


def test_plp_ood_sets_extend_the_mos_benchmark(tmp_path):
    """The PLP study's six ImageNet-1k OoD sets (its get_ood('IN1K')): the
    MOS four plus ImageNet-O and NINCO, recursive folders, PLP's metric
    convention; the dataset builds on such folders."""
    from mmpretrain.registry import DATASETS
    from PIL import Image
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'plp', 'baselines_clip-vit-b16_1xb256_in1k-plp.py'))
    sets = cfg.test_dataloader.dataset.ood_datasets
    assert sorted(sets) == sorted(['iNaturalist', 'SUN', 'Places',
                                   'ImageNet-O', 'Textures', 'NINCO'])
    assert cfg.test_evaluator.protocol == 'cma'
    mos = Config.fromfile(osp.join(
        REPO, 'configs', 'plp', 'baselines_clip-vit-b16_1xb256_in1k-mos.py'))
    assert cfg.model.ood_scorers == mos.model.ood_scorers  # same scores
    rng = np.random.default_rng(0)
    for i, name in enumerate(['ID/c0', 'ID/c1', *sets]):
        folder = tmp_path / name / 'sub'
        folder.mkdir(parents=True)
        for j in range(i + 1):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                folder / f'{j}.jpg')
    dataset = cfg.test_dataloader.dataset
    dataset.id_dataset = dict(type='CustomDataset',
                              data_root=str(tmp_path / 'ID'))
    for name in sets:
        sets[name].data_root = str(tmp_path / name)
    built = DATASETS.build(dataset)
    sizes = built.source_sizes()
    assert sizes['ImageNet-O'] == 2 + list(sets).index('ImageNet-O') + 1
    assert sizes['NINCO'] == 2 + list(sets).index('NINCO') + 1


@pytest.mark.parametrize('id_set,ood_set,classes', [
    ('cifar10', 'cifar100', 10), ('cifar100', 'cifar10', 100)])
def test_cifar_fine_tuning_baseline_trains_and_tests(tmp_path, cifar_roots,
                                                     id_set, ood_set,
                                                     classes):
    """configs/classifier-baselines/...cifar{10,100}.py: mmpretrain's own
    CIFAR recipe trained by its loop (one short epoch here), then the OoD
    table of its logits with the other CIFAR as OoD."""
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'classifier-baselines',
        f'classifier-baselines_resnet18_8xb16_{id_set}.py'))
    assert cfg.model.type == 'OoDImageClassifier'
    assert cfg.model.head.num_classes == classes
    assert cfg.data_preprocessor.num_classes == classes
    assert cfg.train_cfg.max_epochs == 200  # mmpretrain's recipe
    assert cfg.data_preprocessor.to_rgb is False
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.type == id_set.upper()
        loader.dataset.data_root = cifar_roots[id_set.upper()]
        loader.update(num_workers=0, persistent_workers=False)
    test = cfg.test_dataloader
    test.update(batch_size=16, num_workers=0)
    assert test.dataset.id_dataset.type == id_set.upper()
    assert list(test.dataset.ood_datasets) == [ood_set]
    test.dataset.id_dataset.data_root = cifar_roots[id_set.upper()]
    test.dataset.ood_datasets[ood_set].data_root = cifar_roots[
        ood_set.upper()]
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = None
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))
    metrics = runner.test()
    for score in ('MSP', 'MaxLogit', 'Energy'):
        assert 0 <= metrics[f'ood/{score}/{ood_set}/AUROC'] <= 100
    assert 0 <= metrics['ood/accuracy/top1'] <= 100
