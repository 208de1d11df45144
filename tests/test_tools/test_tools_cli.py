"""What a user sees from tools/train.py and tools/test.py: no third-party
warning noise, --resume in an empty work dir, Ctrl-C, TensorBoard logging
and the test loop's progress lines."""
import os
import signal
import subprocess
import sys
import time

import pytest

from _helpers import DEMO_CONFIG, REPO

pytestmark = pytest.mark.slow

# a few seconds of the demo: 1 epoch of 48 images, small test sets
FAST = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.num_per_class=8',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'test_dataloader.dataset.id_dataset.num_per_class=4',
        'test_dataloader.num_workers=0']


def tool(*args, timeout=300):
    """Run a tool as a user would: no PYTHONWARNINGS set."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_resume_in_an_empty_work_dir_starts_from_scratch(tmp_path):
    proc = tool('tools/train.py', DEMO_CONFIG, '--work-dir',
                str(tmp_path / 'w'), '--resume', '--cfg-options', *FAST)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f'--resume: no checkpoint in {tmp_path / "w"} yet, starting ' \
        'from scratch' in out
    assert 'resumed from the latest checkpoint None' not in out
    # the warnings of clip (pkg_resources) and mmcv-lite are silenced
    assert 'pkg_resources is deprecated' not in out
    assert 'MultiScaleDeformableAttention' not in out
    assert (tmp_path / 'w' / 'epoch_1.pth').is_file()


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path):
    work = tmp_path / 'w'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    args = [sys.executable, 'tools/train.py', DEMO_CONFIG, '--work-dir',
            str(work), '--cfg-options', 'train_cfg.max_epochs=50',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'default_hooks.logger.interval=1']
    # Ctrl-C's default action in the child even where the tests themselves
    # run with SIGINT ignored (a background job of a shell without job
    # control), which the child would otherwise inherit
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    try:
        # wait until it trains (a log line of the first iterations)
        while not any(p.name.endswith('.log') and 'Epoch(train)' in
                      p.read_text() for p in work.glob('*/*.log')):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, 'training did not start'
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith('Interrupted after 0 completed epoch(s), '
                           'iteration ')
    assert last.endswith(f'with: python tools/train.py {DEMO_CONFIG} '
                         f'--work-dir {work} --resume')


def test_tensorboard_backend_writes_event_files(tmp_path):
    """README "Logging to TensorBoard" (needs `pip install
    cma_ood[tensorboard]`): the documented --cfg-options."""
    pytest.importorskip('tensorboard', reason='requirements/tests.txt '
                        'installs tensorboard for this test')
    work = tmp_path / 'w'
    proc = tool('tools/train.py', DEMO_CONFIG, '--work-dir', str(work),
                '--cfg-options', *FAST, 'default_hooks.logger.interval=1',
                'visualizer.vis_backends.0.type=TensorboardVisBackend')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    events = list(work.glob('*/vis_data/events.out.tfevents.*'))
    assert events, sorted(str(p) for p in work.rglob('*'))
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()['scalars']
    assert 'loss' in tags and 'lr' in tags
    # one scalar per logged iteration: 48 images at batch 64 = 1 iteration
    assert [e.step for e in acc.Scalars('loss')] == [1]


def test_progress_lines_are_timed(monkeypatch):
    from cma_ood.engine.hooks import progress_hook
    from cma_ood.engine.hooks.progress_hook import (ProgressHook,
                                                    format_progress)
    assert format_progress('test', 40, 335, 10.0, 10240) == (
        'test: 40/335 batches (12%), 10,240 images, 1,024 img/s, 0:10 '
        'elapsed, ETA 1:14')
    assert format_progress('val', 1, 2, 3725.0, 8).endswith(
        '1:02:05 elapsed, ETA 1:02:05')
    clock = iter([100.0, 103.0, 109.9, 110.0, 111.0, 125.0])
    monkeypatch.setattr(progress_hook.time, 'monotonic', lambda: next(clock))
    lines = []
    monkeypatch.setattr(progress_hook, 'print_log',
                        lambda msg, logger=None: lines.append(msg))

    class Runner:
        test_dataloader = [None] * 6

    hook = ProgressHook(interval_s=10)
    hook.before_test_epoch(Runner)
    for i in range(6):
        # batches of 4 images: decoded, or encoded for the GPU (no inputs)
        batch = dict(inputs=[0] * 4, data_samples=[0] * 4) if i % 2 else \
            dict(data_samples=[0] * 4, encoded={})
        hook.after_test_iter(Runner, i, batch)
    # t = 100 (start), 110: 10 s later, 125 (last batch)
    assert lines == [
        format_progress('test', 4, 6, 10.0, 16),
        format_progress('test', 6, 6, 25.0, 24)]
    with pytest.raises(ValueError, match='interval_s'):
        ProgressHook(interval_s=0)
