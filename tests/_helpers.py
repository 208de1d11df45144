"""Helpers shared by the tests (the tests directory is on sys.path)."""
import itertools
import os
import os.path as osp
import subprocess
import sys

from mmengine.config import Config


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'cma_clip-tiny-rn_1xb64_shapes.py')


def run_tool(*args, timeout=600, env=None, check=True):
    """Run ``python <args>`` from the repository root; return the result."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    proc = subprocess.run([sys.executable, *args],
                          cwd=REPO,
                          env=full_env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
            f'{proc.stderr[-6000:]}')
    return proc


_counter = itertools.count()


def small_cfg(work_dir, max_epochs=2, num_per_class=16, batch_size=16,
              **overrides):
    """The demo config shrunk to seconds, deterministic (no augmentation,
    no worker processes) so that resumed runs can be compared exactly."""
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'test_{os.getpid()}_{next(_counter)}'
    cfg.train_cfg.max_epochs = max_epochs
    cfg.param_scheduler[1].end = max_epochs
    cfg.param_scheduler[0].end = 4
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=-1)
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0, deterministic=True)
    loader = cfg.train_dataloader
    loader.update(batch_size=batch_size, num_workers=0,
                  persistent_workers=False)
    loader.dataset.update(num_per_class=num_per_class,
                          pipeline=[dict(type='PackInputs')])
    test = cfg.test_dataloader
    test.update(batch_size=64, num_workers=0)
    test.dataset.id_dataset.num_per_class = 10
    for ood in test.dataset.ood_datasets.values():
        ood.num_per_class = 10
    cfg.merge_from_dict(overrides)
    return cfg


def weights(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
