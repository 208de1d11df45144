"""AtomicCheckpointHook's background saving (``async_save``, issue #15): the
file equals the synchronous one, ``last_checkpoint`` moves only once the
file it names is complete, old checkpoints go only after that, training
goes on meanwhile, a failed write is raised naming the file, and a job
killed mid-write resumes from the previous checkpoint.

On CPU ``async_save`` is off unless asked for; these tests ask for it.
The synchronous crash tests are in test_reliability.py.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

import cma_ood  # noqa: F401
from cma_ood.engine.hooks.checkpoint_hooks import (AsyncCheckpointError,
                                                   AtomicCheckpointHook)
from cma_ood.utils import safe_torch_load

from _helpers import REPO, small_cfg, weights

pytestmark = [pytest.mark.usefixtures('single_thread'), pytest.mark.slow]


def async_cfg(work_dir, **overrides):
    """2 epochs of 3 iterations (24 images, batch 8), the resumable loop,
    a checkpoint every 2 iterations written in the background."""
    cfg = small_cfg(work_dir, max_epochs=2, num_per_class=4, batch_size=8)
    cfg.train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=2)
    cfg.default_hooks.checkpoint = dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=2,
        max_keep_ckpts=-1, async_save=True)
    cfg.merge_from_dict(overrides)
    return cfg


def pth_files(work: Path):
    return sorted(p.name for p in work.iterdir() if p.name.endswith('.pth'))


def pointer(work: Path) -> str:
    return (work / 'last_checkpoint').read_text()


class SimulatedCrash(Exception):
    pass


class Probe(Hook):
    """Calls ``action(runner)`` after the training iteration ``at``
    (1-based), after every other hook."""

    def __init__(self, at, action):
        self.at, self.action = at, action

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            self.action(runner)


def assert_same(a, b, where='checkpoint'):
    """Equal values, types, dtypes, shapes and strides, recursively."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride(), a.device) == (
            b.dtype, b.shape, b.stride(), b.device), where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, HistoryBuffer):
        assert_same(vars(a), vars(b), where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f'{where}[{key!r}]')
        assert_same(getattr(a, '_metadata', None),
                    getattr(b, '_metadata', None), f'{where}._metadata')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def test_async_checkpoint_equals_the_synchronous_one(tmp_path, monkeypatch):
    """Two hooks save the same training state at the same iterations: one
    with the default async_save (synchronous, the model is on the CPU), one
    with async_save=True (in a background thread). The files hold the same
    weights, optimizer, schedulers, message hub and meta."""
    work = tmp_path / 'work'
    cfg = async_cfg(work, **{
        'default_hooks.checkpoint.async_save': None,
        'default_hooks.checkpoint.out_dir': str(tmp_path / 'sync')})
    cfg.custom_hooks = cfg.get('custom_hooks', []) + [dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=2,
        async_save=True, out_dir=str(tmp_path / 'async'),
        priority='VERY_LOW')]
    writers = {}
    put = LocalBackend.put

    def record_writer(self, obj, filepath):
        where = Path(filepath).parent.parent.name
        writers.setdefault(where, set()).add(
            threading.current_thread() is threading.main_thread())
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', record_writer)
    Runner.from_cfg(cfg).train()
    assert writers == {'sync': {True}, 'async': {False}}

    for name in ('iter_2.pth', 'iter_4.pth', 'iter_6.pth'):
        sync_path = tmp_path / 'sync' / 'work' / name
        async_path = tmp_path / 'async' / 'work' / name
        sync, asynch = (safe_torch_load(str(p)) for p in (sync_path,
                                                          async_path))
        assert sync.keys() == asynch.keys() == {
            'meta', 'state_dict', 'message_hub', 'optimizer',
            'param_schedulers'}
        # the two differences: the save time and, as MMEngine records it
        # before saving, each file's own name
        assert sync['message_hub']['runtime_info'].pop('last_ckpt') == str(
            sync_path)
        assert asynch['message_hub']['runtime_info'].pop('last_ckpt') == str(
            async_path)
        sync['meta'].pop('time'), asynch['meta'].pop('time')
        assert sync['optimizer']['state'], 'AdamW state saved'
        assert_same(asynch, sync, name)


def test_last_checkpoint_moves_after_the_file_is_complete(tmp_path,
                                                          monkeypatch):
    """iter_4.pth's rename is held back until training has run iteration 5:
    meanwhile last_checkpoint names iter_2.pth, which is kept
    (max_keep_ckpts=1); then each file is renamed into place before
    last_checkpoint names it, and the older one is deleted only after."""
    work = tmp_path / 'work'
    events, seen = [], {}
    released = threading.Event()
    replace = os.replace

    def replace_and_record(src, dst):
        name = osp.basename(str(dst))
        if name == 'iter_4.pth' and not released.wait(60):
            raise AssertionError('training did not reach iteration 5 '
                                 'while iter_4.pth was being written')
        replace(src, dst)
        if osp.dirname(str(dst)) == str(work):
            events.append((name, osp.basename(pointer(work))
                           if name == 'last_checkpoint' else None,
                           pth_files(work)))

    def at_iter_5(runner):
        seen.update(iter=runner.iter + 1, pointer=pointer(work),
                    files=sorted(os.listdir(work)),
                    meta=safe_torch_load(str(work / 'iter_2.pth'))['meta'])
        released.set()

    monkeypatch.setattr(os, 'replace', replace_and_record)
    runner = Runner.from_cfg(async_cfg(work, **{
        'default_hooks.checkpoint.max_keep_ckpts': 1}))
    runner.register_hook(Probe(5, at_iter_5), priority='LOWEST')
    runner.train()

    # iteration 5 ran while iter_4.pth was being written (its rename waited
    # for this), with last_checkpoint naming the complete iter_2.pth
    assert seen['iter'] == 5
    assert seen['pointer'] == str(work / 'iter_2.pth')
    assert 'iter_4.pth' not in seen['files']
    assert 'iter_2.pth' in seen['files']
    assert (seen['meta']['iter'], seen['meta']['epoch']) == (2, 0)
    assert events == [
        ('iter_2.pth', None, ['iter_2.pth']),
        ('last_checkpoint', 'iter_2.pth', ['iter_2.pth']),
        ('iter_4.pth', None, ['iter_2.pth', 'iter_4.pth']),
        ('last_checkpoint', 'iter_4.pth', ['iter_2.pth', 'iter_4.pth']),
        ('iter_6.pth', None, ['iter_4.pth', 'iter_6.pth']),
        ('last_checkpoint', 'iter_6.pth', ['iter_4.pth', 'iter_6.pth']),
    ]
    # after_train waited for the last write and its pruning
    assert pth_files(work) == ['iter_6.pth']
    assert pointer(work) == str(work / 'iter_6.pth')
    assert safe_torch_load(str(work / 'iter_6.pth'))['meta']['iter'] == 6


@pytest.mark.parametrize('failing,previous,iters_done', [
    # at the next save: in the hooks of iteration 6, before the loop
    # counts it
    ('iter_4.pth', 'iter_2.pth', 5),
    # at the end of training (after_train)
    ('iter_6.pth', 'iter_4.pth', 6),
])
def test_failed_background_write_is_raised_naming_the_file(
        tmp_path, monkeypatch, failing, previous, iters_done):
    work = tmp_path / 'work'
    put = LocalBackend.put
    writers = []

    def half_then_crash(self, obj, filepath):
        if osp.basename(str(filepath)) == f'.{failing}.part':
            writers.append(threading.current_thread())
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise SimulatedCrash(f'disk full writing {filepath}')
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', half_then_crash)
    runner = Runner.from_cfg(async_cfg(work))
    with pytest.raises(AsyncCheckpointError) as err:
        runner.train()
    assert writers and writers[0] is not threading.main_thread()
    msg = str(err.value)
    assert msg.startswith(f'Saving the checkpoint {work / failing} in the '
                          'background failed (SimulatedCrash: disk full')
    assert isinstance(err.value.__cause__, SimulatedCrash)
    # raised when training reached the next save / its end, not later
    assert runner.iter == iters_done
    # nothing of the failed save replaced the previous complete checkpoint
    assert pointer(work) == str(work / previous)
    assert safe_torch_load(str(work / previous))['meta']['iter'] == int(
        previous[5])
    assert failing not in pth_files(work)
    assert (work / f'.{failing}.part').exists()
    if failing == 'iter_4.pth':
        assert pth_files(work) == ['iter_2.pth']  # iter_6 was not started


class RecordStart(Hook):
    """Records ``runner.iter`` when training starts (after any resume)."""

    def __init__(self):
        self.starts = []

    def before_train(self, runner):
        self.starts.append(runner.iter)


KILLED_RUN = """
import os, sys, time
sys.path[:0] = [{tests!r}]
import torch
torch.set_num_threads(1)
from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from mmengine.runner import Runner
import cma_ood
sys.path.insert(0, {here!r})
from test_async_checkpoint import async_cfg

put = LocalBackend.put

def slow_put(self, obj, filepath):
    if os.path.basename(str(filepath)) == '.iter_4.pth.part':
        with open(filepath, 'wb') as f:  # half written when killed
            f.write(obj[:len(obj) // 2])
            f.flush()
        open({marks!r} + '/writing', 'w').close()
        time.sleep(600)
    return put(self, obj, filepath)

LocalBackend.put = slow_put

class Mark(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == 5:
            open({marks!r} + '/iter_5', 'w').close()

runner = Runner.from_cfg(async_cfg({work!r}))
runner.register_hook(Mark(), priority='LOWEST')
runner.train()
"""


def test_sigkill_during_background_write_then_resume(tmp_path):
    """SIGKILL while iter_4.pth is half written in the background and
    training has gone on to iteration 5: last_checkpoint names iter_2.pth,
    complete, and --resume continues from it to the end. (That the resumed
    weights equal an uninterrupted run's is test_reliability's subject.)"""
    work, marks = tmp_path / 'killed', tmp_path / 'marks'
    marks.mkdir()
    script = tmp_path / 'killed_run.py'
    script.write_text(KILLED_RUN.format(
        tests=osp.join(REPO, 'tests'), here=osp.dirname(__file__),
        marks=str(marks), work=str(work)))
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + 120
            while not ((marks / 'writing').exists() and
                       (marks / 'iter_5').exists()):
                assert proc.poll() is None, (tmp_path / 'killed.log'
                                             ).read_text()[-3000:]
                assert time.time() < deadline, 'no background write in time'
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert pointer(work) == str(work / 'iter_2.pth')
    assert safe_torch_load(str(work / 'iter_2.pth'))['meta']['iter'] == 2
    assert pth_files(work) == ['iter_2.pth']
    assert (work / '.iter_4.pth.part').exists()

    resumed = Runner.from_cfg(async_cfg(work, resume=True))
    record = RecordStart()
    resumed.register_hook(record, priority='LOWEST')
    resumed.train()
    assert record.starts == [2]
    assert (resumed.iter, resumed.epoch) == (6, 2)
    assert pth_files(work) == ['iter_2.pth', 'iter_4.pth', 'iter_6.pth']
    final = safe_torch_load(str(work / 'iter_6.pth'))
    assert final['meta']['iter'] == 6
    trained = weights(resumed)  # the last background write is complete
    assert final['state_dict'].keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(final['state_dict'][key], value), key
    assert not (work / '.iter_4.pth.part').exists()  # cleaned at the start


class OnBeforeRun(Hook):

    def __init__(self, action):
        self.action = action

    def before_run(self, runner):
        self.action()


def test_a_new_run_waits_for_the_write_of_a_run_that_failed(tmp_path,
                                                            monkeypatch):
    """Training fails (here: a hook raises at iteration 5) while iter_4.pth
    is still being written; a run started next in the same process and
    resuming from the work dir waits for that write (before_run) and
    continues from iter_4.pth."""
    work = tmp_path / 'work'
    released = threading.Event()
    replace = os.replace

    def held_replace(src, dst):
        if osp.basename(str(dst)) == 'iter_4.pth':
            assert released.wait(60)
            time.sleep(0.5)  # still writing when the new run starts
        replace(src, dst)

    def fail(runner):
        raise SimulatedCrash('training failed at iteration 5')

    monkeypatch.setattr(os, 'replace', held_replace)
    runner = Runner.from_cfg(async_cfg(work))
    runner.register_hook(Probe(5, fail), priority='LOWEST')
    with pytest.raises(SimulatedCrash):
        runner.train()
    assert pointer(work) == str(work / 'iter_2.pth')  # iter_4 in flight
    assert pth_files(work) == ['iter_2.pth']

    resumed = Runner.from_cfg(async_cfg(work, resume=True))
    record = RecordStart()
    resumed.register_hook(record, priority='LOWEST')
    # the held write goes on once the new run has started
    resumed.register_hook(OnBeforeRun(released.set), priority='HIGHEST')
    resumed.train()
    assert record.starts == [4]
    assert pth_files(work) == ['iter_2.pth', 'iter_4.pth', 'iter_6.pth']


def test_async_save_must_be_none_or_a_bool():
    assert AtomicCheckpointHook(interval=1).async_save is None
    with pytest.raises(TypeError, match="async_save must be None or a "
                       "bool, got 'yes'"):
        AtomicCheckpointHook(async_save='yes')
