"""Training through MMEngine's Runner: loss decreases, checkpoints
round-trip (train -> checkpoint -> resume -> test) under torch >= 2.6."""
import json
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import cma_ood  # noqa: F401
from cma_ood.utils import safe_torch_load

from _helpers import DEMO_CONFIG, small_cfg, weights


def test_training_loss_decreases(tmp_path):
    cfg = small_cfg(tmp_path, max_epochs=6, num_per_class=32,
                    batch_size=32)
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 6 * 6
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    # chance level of a 32-pair contrastive batch is log(32) = 3.47
    assert first > 3.3
    assert last < first - 0.25, (first, last)
    # class names came from the dataset through ClassNamesHook
    assert runner.model.classnames == list(
        runner.train_dataloader.dataset.metainfo['classes'])


def test_checkpoint_resume_test_round_trip(tmp_path):
    # uninterrupted run: 2 epochs
    full = Runner.from_cfg(small_cfg(tmp_path / 'full'))
    full.train()
    final = weights(full)
    ckpt1 = tmp_path / 'full' / 'epoch_1.pth'
    assert ckpt1.exists()

    # the checkpoint loads with weights_only=True and our allow-list
    state = safe_torch_load(str(ckpt1), map_location='cpu')
    assert state['meta']['epoch'] == 1
    assert 'message_hub' in state and 'optimizer' in state

    # resume from epoch 1 in a new runner and finish epoch 2
    resumed = Runner.from_cfg(
        small_cfg(tmp_path / 'resumed', resume=True, load_from=str(ckpt1)))
    resumed.train()
    assert resumed.epoch == 2
    assert resumed.iter == full.iter
    for key, value in weights(resumed).items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=1e-6,
                                   msg=key)

    # load_from (weights only, no resume) + test, as tools/test.py does
    tester = Runner.from_cfg(
        small_cfg(tmp_path / 'test',
                  load_from=str(tmp_path / 'resumed' / 'epoch_2.pth')))
    metrics = tester.test()
    for key, value in weights(tester).items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=1e-6)
    assert 0 <= metrics['ood/accuracy/top1'] <= 100
    for ood_set in ('unseen_shapes', 'textures', 'noise', 'mean', 'near',
                    'far'):
        assert 0 <= metrics[f'ood/MCM/{ood_set}/AUROC'] <= 100
    log_dir = tester.log_dir
    with open(osp.join(log_dir, 'ood_results.json')) as f:
        report = json.load(f)
    assert report['id_accuracy_top1'] == pytest.approx(
        metrics['ood/accuracy/top1'])
    assert report['num_samples'] == {
        'ID': 60, 'unseen_shapes': 40, 'textures': 10, 'noise': 10}
    for score in ('MCM', 'MSP', 'Energy'):
        for ood_set in ('unseen_shapes', 'textures', 'noise'):
            png = osp.join(log_dir, 'ood_plots', f'{score}_{ood_set}.png')
            with open(png, 'rb') as f:
                assert f.read(8) == b'\x89PNG\r\n\x1a\n'


class _Payload:
    """Unpickling this runs ``open(path, 'w')``: a stand-in for malware."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_untrusted_checkpoint_is_refused_unless_opted_in(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Payload(str(marker))}, evil)
    with pytest.raises(pickle.UnpicklingError) as err:
        safe_torch_load(str(evil))
    assert '--trust-checkpoint' in str(err.value)
    assert 'evil.pth' in str(err.value)
    assert not marker.exists()
    # the restricted getattr serves HistoryBuffer's statistics only
    from cma_ood.utils.checkpoint import _history_buffer_getattr
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        _history_buffer_getattr(os, 'system')
    safe_torch_load(str(evil), trust=True)
    assert marker.exists()


def test_importing_cma_ood_leaves_mmengine_alone_until_installed(tmp_path):
    """Importing the package changes no MMEngine loader; the explicit
    install (tools, SafeCheckpointHook) does, once per trust value."""
    import subprocess
    import sys
    code = (
        'import cma_ood\n'
        'from mmengine.runner.checkpoint import CheckpointLoader as L\n'
        'from cma_ood.utils.checkpoint import (install_checkpoint_loader,\n'
        '    installed_checkpoint_trust)\n'
        'before = L._get_checkpoint_loader("x.pth")\n'
        'assert installed_checkpoint_trust() is None, before\n'
        'install_checkpoint_loader()\n'
        'safe = L._get_checkpoint_loader("x.pth")\n'
        'assert safe is not before and safe.cma_ood_trust is False\n'
        'install_checkpoint_loader()\n'
        'assert L._get_checkpoint_loader("x.pth") is safe\n'
        'install_checkpoint_loader(trust=True)\n'
        'assert installed_checkpoint_trust() is True\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert log.count('weights_only=True and the allow-list') == 1
    assert log.count('full unpickling (--trust-checkpoint') == 1


def test_safe_checkpoint_hook_keeps_the_entry_points_choice():
    from cma_ood.engine.hooks import SafeCheckpointHook
    from cma_ood.utils.checkpoint import (install_checkpoint_loader,
                                          installed_checkpoint_trust)
    install_checkpoint_loader(trust=True)
    SafeCheckpointHook().before_run(None)
    assert installed_checkpoint_trust() is True
    SafeCheckpointHook(trust=False).before_run(None)
    assert installed_checkpoint_trust() is False
    with pytest.raises(TypeError, match='trust'):
        SafeCheckpointHook(trust='yes')


def test_tools_refuse_untrusted_checkpoint_unless_flagged(tmp_path):
    """tools/test.py refuses a checkpoint holding objects outside the
    allow-list, naming the opt-in; --trust-checkpoint loads it."""
    import argparse
    from mmpretrain.registry import MODELS

    from _helpers import run_tool
    cfg = Config.fromfile(DEMO_CONFIG)
    model = MODELS.build(dict(cfg.model, classnames=['a'] * 6))
    ckpt = tmp_path / 'extra.pth'
    torch.save({'state_dict': model.state_dict(),
                'extra': argparse.Namespace(note='not in the allow-list')},
               ckpt)
    fast = ['--cfg-options', 'test_dataloader.num_workers=0',
            'test_dataloader.dataset.id_dataset.num_per_class=3',
            'test_evaluator.save_plots=False']
    args = ['tools/test.py', DEMO_CONFIG, str(ckpt), '--work-dir',
            str(tmp_path / 'w')]
    refused = run_tool(*args, *fast, check=False)
    assert refused.returncode != 0
    assert 'Refused to load' in refused.stderr
    assert '--trust-checkpoint' in refused.stderr
    trusted = run_tool(*args, '--trust-checkpoint', *fast)
    assert 'ID top-1 accuracy' in trusted.stdout + trusted.stderr


@pytest.mark.parametrize('given', [False, True])
def test_trust_checkpoint_flag_is_a_plain_value(monkeypatch, given):
    import argparse

    from cma_ood.utils.checkpoint import add_trust_checkpoint_argument
    environ = dict(os.environ)
    parser = argparse.ArgumentParser()
    add_trust_checkpoint_argument(parser)
    args = parser.parse_args(['--trust-checkpoint'] if given else [])
    assert args.trust_checkpoint is given
    assert dict(os.environ) == environ  # no environment variable set