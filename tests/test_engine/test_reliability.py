"""Reliability (issue #6): exact resume after SIGKILL, crash-safe checkpoints
and a one-line error naming the culprit for every bad input.

Covered elsewhere: non-finite OoD scores (tests/test_evaluation/test_ood_metric.py::
test_non_finite_scores_name_the_dataset), untrusted pickles refused unless
--trust-checkpoint (tests/test_engine/test_training.py::
test_untrusted_checkpoint_is_refused_unless_opted_in), NegLabel caches
keyed by weights and candidates (tests/test_models/test_ood_scorers/test_neglabel_scorer.py::
test_cache_key_changes, test_cache_key_covers_settings), checkpoint
conversion (tests/test_utils/test_convert_checkpoint.py).
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import LoadImageFromFile
from mmengine.fileio import LocalBackend
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, MODELS

import cma_ood  # noqa: F401
from cma_ood.datasets import OoDConcatDataset
from cma_ood.datasets.image_check import (BrokenImageError,
                                          CheckedLoadImageFromFile)
from cma_ood.engine.loops import SeededPipeline
from cma_ood.models.losses import CMALoss
from cma_ood.datasets.neglabel_candidates import read_candidates
from cma_ood.utils import safe_torch_load
from cma_ood.utils.checkpoint import atomic_write_text

from _helpers import DEMO_CONFIG, REPO, run_tool, small_cfg, weights


pytestmark = [pytest.mark.usefixtures('single_thread'), pytest.mark.slow]


AUGMENT = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]


def resumable_cfg(work_dir, **overrides):
    """2 epochs of 3 iterations (24 images, batch 8) with random crops,
    the resumable loop and an atomic checkpoint every 2 iterations."""
    cfg = small_cfg(work_dir, max_epochs=2, num_per_class=4, batch_size=8)
    cfg.train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=2)
    cfg.train_dataloader.dataset.pipeline = AUGMENT
    cfg.default_hooks.checkpoint = dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=2,
        max_keep_ckpts=-1)
    cfg.merge_from_dict(overrides)
    return cfg


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6,
                                   msg=key)


def ckpt_weights(path):
    return safe_torch_load(str(path), map_location='cpu')['state_dict']


# --------------------------------------------------------- crash + resume
RESUME_CONFIG = """
_base_ = [{demo!r}]
max_epochs = 3
train_cfg = dict(_delete_=True, type='ResumableEpochBasedTrainLoop',
                 max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', eta_min=0, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
# 30 images in batches of 6: 5 iterations per epoch, random crops in a
# persistent worker process as in the demo
train_dataloader = dict(batch_size=6, dataset=dict(num_per_class=5))
# checkpoints at iterations 3, 6, 9, 12: all in the middle of an epoch
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=True)
"""


def _checkpoint_iter(work: Path) -> int:
    try:
        name = (work / 'last_checkpoint').read_text().strip()
    except FileNotFoundError:
        return 0
    match = re.search(r'iter_(\d+)\.pth$', name)
    return int(match.group(1)) if match else 0


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    config = tmp_path / 'resume_demo.py'
    config.write_text(RESUME_CONFIG.format(demo=DEMO_CONFIG))
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')

    full = tmp_path / 'full'
    run_tool('tools/train.py', str(config), '--work-dir', str(full),
             env=dict(OMP_NUM_THREADS='1'))

    work = tmp_path / 'killed'
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, 'tools/train.py', str(config), '--work-dir',
             str(work)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            deadline = time.time() + 300
            while _checkpoint_iter(work) < 6:
                assert proc.poll() is None, (tmp_path / 'killed.log'
                                             ).read_text()[-3000:]
                assert time.time() < deadline, 'no checkpoint in time'
                time.sleep(0.01)
            # SIGKILL the trainer and its dataloader worker mid-epoch
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed_from = _checkpoint_iter(work)
    assert resumed_from in (6, 9, 12)  # all mid-epoch (5 per epoch)
    assert not (work / 'iter_15.pth').exists()

    resumed = run_tool('tools/train.py', str(config), '--work-dir',
                       str(work), '--resume', env=dict(OMP_NUM_THREADS='1'))
    out = resumed.stdout + resumed.stderr
    epoch, batch = divmod(resumed_from, 5)
    assert f'resumed epoch: {epoch}, iter: {resumed_from}' in out
    # our line counts completed epochs as MMEngine's does, and names the
    # 1-based epoch the training log continues with
    assert (f'Resumed at iteration {resumed_from} after {epoch} completed '
            f'epoch(s): continuing with batch {batch + 1} of 5 of epoch '
            f'{epoch + 1} (logged as Epoch(train) [{epoch + 1}])') in out
    assert f'Epoch(train) [{epoch + 1}][{batch + 1}/5]' in out

    final_full = safe_torch_load(str(full / 'iter_15.pth'))
    final_resumed = safe_torch_load(str(work / 'iter_15.pth'))
    assert final_resumed['meta']['iter'] == final_full['meta']['iter'] == 15
    assert_same_weights(final_resumed['state_dict'],
                        final_full['state_dict'])
    # (without seeded augmentation the weights would differ: the resumed
    # worker process would crop other regions)


def test_resume_at_epoch_end_iteration_checkpoint(tmp_path):
    """An iteration checkpoint at the last batch of an epoch: the resumed
    run trains no batch of that epoch again but still runs its epoch-end
    hooks (the epoch counter, by-epoch schedulers)."""
    full = Runner.from_cfg(resumable_cfg(tmp_path / 'full', **{
        'default_hooks.checkpoint.interval': 3}))
    full.train()
    ckpt = tmp_path / 'full' / 'iter_3.pth'
    meta = safe_torch_load(str(ckpt))['meta']
    assert (meta['epoch'], meta['iter']) == (0, 3)
    resumed = Runner.from_cfg(resumable_cfg(
        tmp_path / 'resumed', resume=True, load_from=str(ckpt)))
    resumed.train()
    assert (resumed.epoch, resumed.iter) == (2, 6)
    assert_same_weights(weights(resumed), weights(full))


def test_stock_loop_refuses_mid_epoch_resume(tmp_path):
    Runner.from_cfg(resumable_cfg(tmp_path / 'a')).train()
    cfg = resumable_cfg(tmp_path / 'b', resume=True,
                        load_from=str(tmp_path / 'a' / 'iter_2.pth'))
    cfg.train_cfg = dict(by_epoch=True, max_epochs=2)
    with pytest.raises(RuntimeError) as err:
        Runner.from_cfg(cfg).train()
    msg = str(err.value)
    assert msg.startswith('Resuming at iteration 2, batch 2 of epoch 1: '
                          'EpochBasedTrainLoop would train the 2 batches')
    assert "type='ResumableEpochBasedTrainLoop'" in msg


def test_resume_with_another_dataloader_is_refused(tmp_path):
    Runner.from_cfg(resumable_cfg(tmp_path / 'a')).train()
    # 4 iterations done, but with batches of 4 an epoch has 6
    cfg = resumable_cfg(tmp_path / 'b', resume=True,
                        load_from=str(tmp_path / 'a' / 'iter_4.pth'))
    cfg.train_dataloader.batch_size = 24
    with pytest.raises(RuntimeError, match=r'Cannot resume at iteration 4 '
                       r'of epoch 2: with 1 iterations per epoch .* the '
                       r'train dataloader .* changed'):
        Runner.from_cfg(cfg).train()


def test_seeded_pipeline_depends_on_seed_epoch_and_sample_only():
    def draw(results):
        return dict(results, values=(np.random.rand(), torch.rand(1).item()))

    pipe = SeededPipeline(draw)
    pipe.set_epoch(seed=7, epoch=1)
    torch.manual_seed(123)
    np.random.seed(123)
    before = (np.random.get_state()[1].copy(), torch.get_rng_state())
    first = pipe(dict(sample_idx=5))['values']
    # the caller's generators are untouched
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert torch.equal(torch.get_rng_state(), before[1])
    np.random.rand(10)  # another history: same draws
    assert pipe(dict(sample_idx=5))['values'] == first
    assert pipe(dict(sample_idx=6))['values'] != first
    pipe.set_epoch(seed=7, epoch=2)
    assert pipe(dict(sample_idx=5))['values'] != first
    pipe.set_epoch(seed=8, epoch=1)
    assert pipe(dict(sample_idx=5))['values'] != first
    with pytest.raises(KeyError, match='no "sample_idx"'):
        pipe(dict(img_path='x.png'))


class SimulatedCrash(Exception):
    pass


def crash_on_write(monkeypatch, name):
    """Make LocalBackend.put write half of the file ``name`` (temporary or
    final) and crash, as a job killed while saving would."""
    put = LocalBackend.put

    def half_then_crash(self, obj, filepath):
        base = osp.basename(str(filepath))
        if base in (name, f'.{name}.part'):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise SimulatedCrash(filepath)
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', half_then_crash)


def test_crash_while_saving_keeps_the_last_complete_checkpoint(
        tmp_path, monkeypatch):
    full = Runner.from_cfg(resumable_cfg(tmp_path / 'full'))
    full.train()

    work = tmp_path / 'crashed'
    keep_one = {'default_hooks.checkpoint.max_keep_ckpts': 1}
    with monkeypatch.context() as patch:
        crash_on_write(patch, 'iter_4.pth')
        with pytest.raises(SimulatedCrash):
            Runner.from_cfg(resumable_cfg(work, **keep_one)).train()
    # the previous checkpoint is complete, kept and named by last_checkpoint
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    assert safe_torch_load(str(work / 'iter_2.pth'))['meta']['iter'] == 2
    assert not (work / 'iter_4.pth').exists()
    assert (work / '.iter_4.pth.part').exists()

    resumed = Runner.from_cfg(resumable_cfg(work, resume=True, **keep_one))
    resumed.train()
    assert_same_weights(weights(resumed), weights(full))
    ckpts = sorted(p.name for p in work.iterdir() if 'pth' in p.name)
    assert ckpts == ['iter_6.pth']  # max_keep_ckpts=1; temp file removed

    # MMEngine's CheckpointHook in the same crash: it deleted iter_2.pth
    # before writing iter_4.pth, so last_checkpoint names a missing file
    stock = tmp_path / 'stock'
    with monkeypatch.context() as patch:
        crash_on_write(patch, 'iter_4.pth')
        with pytest.raises(SimulatedCrash):
            Runner.from_cfg(resumable_cfg(stock, **{
                **keep_one, 'default_hooks.checkpoint.type':
                'CheckpointHook'})).train()
    assert (stock / 'last_checkpoint').read_text() == str(
        stock / 'iter_2.pth')
    assert not (stock / 'iter_2.pth').exists()


def test_last_checkpoint_file_is_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / 'last_checkpoint'
    atomic_write_text(str(path), 'old')

    def crash(*args):
        raise SimulatedCrash('killed before the rename')

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(SimulatedCrash):
        atomic_write_text(str(path), 'new')
    assert path.read_text() == 'old'


# ------------------------------------------------------------ bad input
def write_image(path: Path, seed: int = 0, ext=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.resize(
        np.random.default_rng(seed).integers(0, 255, (4, 4, 3), np.uint8),
        (48, 40), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(ext or path.suffix, img)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def image_list_set(root: Path, name: str, files, checked=True):
    """An ImageListDataset config over ``files`` (relative to root)."""
    lst = root / 'lists' / f'{name}.txt'
    lst.parent.mkdir(parents=True, exist_ok=True)
    lst.write_text(''.join(f'{f}\n' for f in files))
    load = 'CheckedLoadImageFromFile' if checked else 'LoadImageFromFile'
    return dict(type='ImageListDataset', ann_file=str(lst),
                data_prefix=str(root),
                pipeline=[dict(type=load), dict(type='PackInputs')])


@pytest.fixture
def image_sets(tmp_path):
    root = tmp_path / 'data'
    for i in range(4):
        write_image(root / 'id' / f'{i}.png', i)
        write_image(root / 'ood' / f'{i}.jpg', 10 + i)
    return root


def test_missing_data_root_names_the_set_and_path(tmp_path, image_sets):
    ood = dict(x=image_list_set(image_sets, 'ood', ['ood/0.jpg']))
    missing = str(tmp_path / 'no_such_dir')
    for cfg in (dict(type='CustomDataset', data_root=missing,
                     with_label=False),
                dict(type='ImageNet', data_root=missing, split='val')):
        with pytest.raises(FileNotFoundError) as err:
            OoDConcatDataset(id_dataset=cfg, ood_datasets=ood)
        assert str(err.value) == (
            f"OoDConcatDataset: data_root of the ID set 'ID' not found: "
            f"{missing} ({cfg['type']}); fix the path or see "
            'docs/data_preparation.md')
    # a data_root that exists without the expected split folder
    with pytest.raises(FileNotFoundError,
                       match=r"cannot build the OoD set 'inat' \(ImageNet\)"
                       r'.*' + re.escape(str(image_sets / 'val'))):
        OoDConcatDataset(
            id_dataset=image_list_set(image_sets, 'id', ['id/0.png']),
            ood_datasets=dict(inat=dict(type='ImageNet', split='val',
                                        data_root=str(image_sets))))
    # training sets are built by mmpretrain: its error names the folder
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        DATASETS.build(dict(type='ImageNet', data_root=missing,
                            split='train'))


def test_missing_image_list_names_the_set_and_file(tmp_path, image_sets):
    bad = dict(type='ImageListDataset', ann_file=str(tmp_path / 'nope.txt'),
               data_prefix=str(image_sets))
    with pytest.raises(FileNotFoundError) as err:
        OoDConcatDataset(
            id_dataset=image_list_set(image_sets, 'id', ['id/0.png']),
            ood_datasets=dict(ninco=bad))
    msg = str(err.value)
    assert msg.startswith("OoDConcatDataset: cannot build the OoD set "
                          "'ninco' (ImageListDataset): ImageListDataset: "
                          f'image list file not found: {tmp_path}/nope.txt')
    assert '\n' not in msg


def test_missing_txtfiles_directory_is_named(tmp_path):
    missing = tmp_path / 'txtfiles'
    # the message names the directory (today through the files in it)
    with pytest.raises(FileNotFoundError,
                       match='NegLabel candidate .*not found: ' +
                       re.escape(str(missing))):
        read_candidates(missing, ('noun.animal', 'adj.all'))


def test_broken_image_files_are_an_error_naming_the_file(tmp_path):
    good = write_image(tmp_path / 'good.jpg')
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.jpg'
    truncated.write_bytes(data[:int(len(data) * 0.9)])
    png = write_image(tmp_path / 'good.png').read_bytes()
    truncated_png = tmp_path / 'truncated.png'
    truncated_png.write_bytes(png[:len(png) - 20])
    text = tmp_path / 'notes.jpg'
    text.write_text('not an image')
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')

    load = CheckedLoadImageFromFile()
    ref = LoadImageFromFile()(dict(img_path=str(good)))['img']
    assert np.array_equal(load(dict(img_path=str(good)))['img'], ref)
    for path, why in ((truncated, 'truncated JPEG'),
                      (truncated_png, 'truncated PNG'),
                      (text, 'not a decodable image'),
                      (empty, 'the file is empty'),
                      (tmp_path / 'missing.png', 'cannot be read')):
        with pytest.raises(BrokenImageError) as err:
            load(dict(img_path=str(path)))
        assert str(err.value).startswith(f'Broken image file {path}: {why}')
        assert 'skip_broken=True' in str(err.value)
    assert CheckedLoadImageFromFile(ignore_empty=True)(
        dict(img_path=str(truncated))) is None


def test_broken_image_in_a_benchmark_names_set_and_file(image_sets):
    broken = image_sets / 'ood' / '2.jpg'
    broken.write_bytes(broken.read_bytes()[:100])
    dataset = OoDConcatDataset(
        id_dataset=image_list_set(image_sets, 'id', ['id/0.png']),
        ood_datasets=dict(
            far=image_list_set(image_sets, 'far',
                               [f'ood/{i}.jpg' for i in range(4)])))
    assert len(dataset) == 5
    dataset[2]
    with pytest.raises(BrokenImageError) as err:
        dataset[3]
    assert str(err.value).startswith(
        f"OoDConcatDataset: loading {broken} of the OoD set 'far' failed: "
        f'Broken image file {broken}: truncated JPEG')
    # mmcv's loader fails too, with its own message, which gets the set
    plain = OoDConcatDataset(
        id_dataset=image_list_set(image_sets, 'id', ['id/0.png'], False),
        ood_datasets=dict(far=image_list_set(
            image_sets, 'far', ['ood/2.jpg'], False)))
    with pytest.raises(AssertionError, match=f"{broken} of the OoD set 'far'"):
        plain[1]


def test_skip_broken_warns_and_counts(image_sets, tmp_path):
    (image_sets / 'ood' / '1.jpg').write_bytes(b'\xff\xd8garbage')
    (image_sets / 'ood' / '3.jpg').write_text('html error page')
    files = [f'ood/{i}.jpg' for i in range(4)]
    dataset = OoDConcatDataset(
        id_dataset=image_list_set(image_sets, 'id', ['id/0.png', 'id/1.png']),
        ood_datasets=dict(far=image_list_set(image_sets, 'far', files),
                          near=image_list_set(image_sets, 'near',
                                              files[:1])),
        skip_broken=True)
    assert dataset.source_sizes() == dict(ID=2, far=2, near=1)
    assert dataset.metainfo['skipped_images'] == dict(far=2)
    assert [(Path(p).name, why) for p, why in dataset.skipped['far']] == [
        ('1.jpg', 'truncated JPEG (no image data)'),
        ('3.jpg', 'not a decodable image')]
    paths = [dataset[i]['data_samples'].img_path for i in range(len(dataset))]
    assert [Path(p).name for p in paths] == ['0.png', '1.png', '0.jpg',
                                             '2.jpg', '0.jpg']
    assert [dataset[i]['data_samples'].ood_index
            for i in range(len(dataset))] == list(range(5))
    # a set with nothing left is an error
    with pytest.raises(ValueError, match="every image of the OoD set 'bad' "
                       'is broken'):
        OoDConcatDataset(
            id_dataset=image_list_set(image_sets, 'id', ['id/0.png']),
            ood_datasets=dict(bad=image_list_set(image_sets, 'bad',
                                                 ['ood/3.jpg'])),
            skip_broken=True)


def test_empty_sets_are_an_error_naming_them(tmp_path, image_sets):
    empty_dir = tmp_path / 'empty'
    empty_dir.mkdir()
    with pytest.raises(RuntimeError) as err:
        OoDConcatDataset(
            id_dataset=dict(type='CustomDataset', data_root=str(empty_dir),
                            with_label=False),
            ood_datasets=dict(
                x=image_list_set(image_sets, 'x', ['ood/0.jpg'])))
    assert str(err.value).startswith(
        "OoDConcatDataset: cannot build the ID set 'ID' (CustomDataset): "
        'Found 0 files')
    empty_list = tmp_path / 'empty.txt'
    empty_list.write_text('\n')
    with pytest.raises(ValueError, match="the OoD set 'x' .* lists no "
                       'images'):
        OoDConcatDataset(
            id_dataset=image_list_set(image_sets, 'id', ['id/0.png']),
            ood_datasets=dict(x=dict(type='ImageListDataset',
                                     ann_file=str(empty_list))))


def test_ood_set_overlapping_the_id_set_is_an_error(tmp_path, image_sets):
    id_set = image_list_set(image_sets, 'id', ['id/0.png', 'id/1.png'])
    with pytest.raises(ValueError) as err:
        OoDConcatDataset(
            id_dataset=id_set,
            ood_datasets=dict(
                ok=image_list_set(image_sets, 'ok', ['ood/0.jpg']),
                dup=image_list_set(image_sets, 'dup',
                                   ['ood/1.jpg', 'id/1.png'])))
    assert str(err.value).startswith(
        "OoDConcatDataset: the OoD set 'dup' shares 1 image file(s) with "
        f"the ID set 'ID', e.g. {image_sets / 'id' / '1.png'}; ")
    # the same files reached through a symbolic link to the folder
    (tmp_path / 'linked').symlink_to(image_sets / 'id')
    (tmp_path / 'linked.txt').write_text('0.png\n')
    linked = dict(type='ImageListDataset',
                  ann_file=str(tmp_path / 'linked.txt'),
                  data_prefix=str(tmp_path / 'linked'))
    with pytest.raises(ValueError, match="the OoD set 'linked' shares 1"):
        OoDConcatDataset(id_dataset=id_set,
                         ood_datasets=dict(linked=linked))
    OoDConcatDataset(id_dataset=id_set, ood_datasets=dict(linked=linked),
                     check_overlap=False)


def test_class_name_count_mismatch_is_an_error(tmp_path):
    names = {'model.classnames': ['circle', 'square', 'star']}
    with pytest.raises(ValueError, match='The model has 3 class names but '
                       'ShapesDataset has 6 classes; set model.classnames'):
        Runner.from_cfg(small_cfg(tmp_path / 'train', **names)).train()
    with pytest.raises(ValueError, match='The model has 3 class names but '
                       'OoDConcatDataset has 6 classes'):
        Runner.from_cfg(small_cfg(tmp_path / 'test', **names)).test()


@pytest.mark.parametrize('key', ['train_template', 'test_template'])
def test_unknown_prompt_placeholder_is_an_error(tmp_path, key):
    cfg = small_cfg(tmp_path, **{f'model.{key}': 'a photo of a {name}'})
    with pytest.raises(ValueError) as err:
        Runner.from_cfg(cfg)
    assert f"{key} 'a photo of a {{name}}' must contain exactly one " \
        '"{}" placeholder' in str(err.value)


@MODELS.register_module(force=True)
class NaNAtCallLoss(CMALoss):
    """CMALoss whose ``nan_at``-th call returns a NaN loss."""

    def __init__(self, nan_at: int, **kwargs):
        super().__init__(**kwargs)
        self.nan_at, self.calls = nan_at, 0

    def forward(self, *args, **kwargs):
        parts = super().forward(*args, **kwargs)
        self.calls += 1
        if self.calls == self.nan_at:
            parts['loss'] = parts['loss'] * float('nan')
        return parts


def test_nan_loss_stops_training_naming_the_iteration(tmp_path):
    cfg = resumable_cfg(tmp_path, **{
        'model.loss': dict(type='NaNAtCallLoss', nan_at=4),
        'default_hooks.checkpoint.interval': 1})
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError) as err:
        runner.train()
    assert str(err.value) == (
        'Non-finite loss at iteration 4 (epoch 2, batch 1): loss=nan; '
        'training stopped. Lower the learning rate or clip gradients '
        '(optim_wrapper.clip_grad=dict(max_norm=1.0)), check the images of '
        f'this batch, then resume from {tmp_path / "iter_3.pth"} with '
        '--resume')
    # no checkpoint holds the weights of the failed step
    assert not (tmp_path / 'iter_4.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_3.pth')


def test_nan_loss_read_late_still_names_its_iteration(tmp_path):
    """FiniteLossHook reads the losses at the checkpoint iterations and
    epoch ends only (the logger's interval is beyond the run): the NaN of
    iteration 4 is found at iteration 5, before its checkpoint is saved,
    and the error names iteration 4."""
    cfg = resumable_cfg(tmp_path, **{
        'model.loss': dict(type='NaNAtCallLoss', nan_at=4),
        'default_hooks.checkpoint.interval': 5,
        'default_hooks.logger.interval': 100})
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError) as err:
        runner.train()
    assert str(err.value).startswith(
        'Non-finite loss at iteration 4 (epoch 2, batch 1): loss=nan; '
        'training stopped.')
    assert str(err.value).endswith('then restart the run')
    assert runner.model.loss_module.calls == 5  # read after iteration 5
    assert not (tmp_path / 'iter_5.pth').exists()
    assert not (tmp_path / 'last_checkpoint').exists()


def test_finite_loss_hook_checks_before_validation_and_any_save(tmp_path):
    """Pending non-finite losses are raised before a validation (inside an
    iteration-based loop) and before a checkpoint saved between reads."""
    from cma_ood.engine.hooks import FiniteLossHook
    runner = types_runner(tmp_path)
    for stage in ('before_val', 'before_save_checkpoint'):
        hook = FiniteLossHook(interval=100)
        runner.iter = 0
        hook.after_train_iter(runner, 0, outputs=dict(
            loss=torch.tensor(float('inf'))))
        args = (dict(), ) if stage == 'before_save_checkpoint' else ()
        with pytest.raises(FloatingPointError, match='Non-finite loss at '
                           'iteration 1 .*loss=inf'):
            getattr(hook, stage)(runner, *args)
        getattr(hook, stage)(runner, *args)  # nothing pending any more


def types_runner(tmp_path):
    import types
    from mmengine.hooks import LoggerHook
    from mmengine.logging import MessageHub
    return types.SimpleNamespace(
        hooks=[LoggerHook(interval=10)], train_dataloader=[None] * 50,
        max_iters=100, iter=0, epoch=0,
        message_hub=MessageHub.get_instance(f'fin_{tmp_path.name}'))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    torch.manual_seed(0)
    other = MODELS.build(dict(type='MultiModalClassifier',
                              arch='tiny-vit-32px', classnames=['a', 'b']))
    ckpt = tmp_path / 'vit.pth'
    torch.save(dict(state_dict=other.state_dict(), meta=dict()), ckpt)
    proc = run_tool('tools/test.py', DEMO_CONFIG, str(ckpt), '--work-dir',
                    str(tmp_path / 'work'), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"RuntimeError: {ckpt} does not fit the MultiModalClassifier (arch "
        "'tiny-rn-32px') of this config: ")
    assert ("1 shape mismatch(es) (key, checkpoint, model): ("
            "'clip.visual.conv1.weight', (64, 3, 8, 8), (8, 3, 3, 3)); "
            "122 missing key(s): ['clip.visual.bn1.weight', ") in last
    assert "31 unexpected key(s): ['clip.visual.class_embedding', " in last
    assert 'tools/convert_cma_checkpoint.py' in last
    # same width, other shapes: the shapes are named
    state = {
        k: v[:1] if k == 'clip.token_embedding.weight' else v
        for k, v in MODELS.build(
            small_cfg(tmp_path).model).state_dict().items()
    }
    torch.save(dict(state_dict=state), ckpt)
    with pytest.raises(RuntimeError, match=re.escape(
            "1 shape mismatch(es) (key, checkpoint, model): ("
            "'clip.token_embedding.weight', (1, 64), (49408, 64))")):
        Runner.from_cfg(small_cfg(tmp_path / 'w', load_from=str(ckpt))).test()


# ------------------------------------------------ not a checkpoint at all
def test_files_that_are_not_checkpoints_are_named_in_one_line(tmp_path):
    from cma_ood.utils.checkpoint import CheckpointFileError
    text = tmp_path / 'x.pth'
    text.write_text('hello\n')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict={'w': torch.zeros(4096)}), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    cases = [(text, "is not a PyTorch checkpoint: it starts with b'hello"),
             (empty, 'is empty (0 bytes)'), (truncated, 'is truncated')]
    for path, what in cases:
        with pytest.raises(CheckpointFileError) as err:
            safe_torch_load(str(path))
        msg = str(err.value)
        assert msg.startswith(f'{path} {what}') and '\n' not in msg
    assert safe_torch_load(str(good))['state_dict']['w'].shape == (4096, )
    # a complete checkpoint whose content is refused keeps that error
    torch.save(dict(f=print), tmp_path / 'code.pth')
    import pickle
    with pytest.raises(pickle.UnpicklingError, match='allow-list'):
        safe_torch_load(str(tmp_path / 'code.pth'))


def test_tools_test_names_a_text_file_given_as_checkpoint(tmp_path):
    bad = tmp_path / 'x.pth'
    bad.write_text('hello\n')
    proc = run_tool('tools/test.py', DEMO_CONFIG, str(bad), '--work-dir',
                    str(tmp_path / 'work'), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith(f"CheckpointFileError: {bad} is not a PyTorch "
                    "checkpoint: it starts with b'hello\\n', where "
                    'torch.save writes a zip archive (or a pickle)')


def test_resume_falls_back_when_last_checkpoint_was_cut_short(tmp_path):
    """MMEngine writes last_checkpoint with a plain write after the
    checkpoint is complete; if a crash cut that line short (or the file it
    names is gone or truncated), --resume takes the newest complete
    checkpoint instead of failing."""
    from cma_ood.utils.checkpoint import resume_checkpoint
    assert resume_checkpoint(str(tmp_path)) is None  # nothing: from scratch
    old, new = tmp_path / 'iter_2.pth', tmp_path / 'iter_4.pth'
    torch.save({'meta': {'iter': 2}}, old)
    torch.save({'meta': {'iter': 4}}, new)
    os.utime(old, (1000, 1000))
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text(str(new))
    assert resume_checkpoint(str(tmp_path)) == str(new)
    pointer.write_text('')  # cut short
    assert resume_checkpoint(str(tmp_path)) == str(new)
    new.write_bytes(new.read_bytes()[:20])  # truncated newest
    pointer.write_text(str(new))
    assert resume_checkpoint(str(tmp_path)) == str(old)
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    assert resume_checkpoint(str(tmp_path)) == str(old)
