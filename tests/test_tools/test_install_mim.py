"""A regular (non-editable) install ships configs/tools in cma_ood/.mim and
`mim train` / `mim test` run from anywhere with the config's name alone."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from _helpers import REPO

pytestmark = pytest.mark.slow

CONFIG = 'cma_clip-tiny-rn_1xb64_shapes.py'
FAST = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.num_per_class=8',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'test_dataloader.dataset.id_dataset.num_per_class=5',
        'test_dataloader.num_workers=0']


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``pip install .`` of a copy of the checkout into a private folder."""
    if shutil.which('mim', path=osp.dirname(sys.executable)) is None:
        pytest.fail('openmim is not installed (requirements/tests.txt)')
    root = tmp_path_factory.mktemp('install')
    src = root / 'src'
    shutil.copytree(
        REPO, src,
        ignore=shutil.ignore_patterns('.venv', '.git', 'work_dirs', '.mim',
                                      '*.egg-info', 'build', '__pycache__',
                                      'data'))
    site = root / 'site'
    subprocess.run([
        sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
        '--no-build-isolation', '--target', str(site), str(src)
    ], check=True, capture_output=True, timeout=300)
    return site


def mim(site, *args, cwd):
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONWARNINGS='ignore')
    exe = osp.join(osp.dirname(sys.executable), 'mim')
    proc = subprocess.run([exe, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_package_ships_configs_tools_and_txtfiles(installed):
    mim_dir = installed / 'cma_ood' / '.mim'
    assert (mim_dir / 'configs' / 'demo' / CONFIG).is_file()
    assert (mim_dir / 'tools' / 'train.py').is_file()
    assert (mim_dir / 'tools' / 'test.py').is_file()
    assert (mim_dir / 'txtfiles' / 'noun.Tops.txt').is_file()
    assert not (mim_dir / 'configs').is_symlink()
    assert (mim_dir / 'model-index.yml').is_file()
    assert (mim_dir / 'configs' / 'cma' / 'metafile.yml').is_file()
    assert not (mim_dir / 'model-index.yml').is_symlink()


def test_mim_search_lists_the_model_zoo(installed, tmp_path):
    """`mim search cma_ood` reads cma_ood/.mim/model-index.yml and the
    metafiles it imports (configs/<algorithm>/metafile.yml)."""
    out = mim(installed, 'search', 'cma_ood', '--display-width', '400',
              cwd=tmp_path)
    for name in ('cma-neglabel-fixed_clip-vit-b16_4xb128_in1k-mos',
                 'cma_clip-vit-b16_4xb128_in1k',
                 'neglabel_clip-vit-b16_1xb256_in1k-mos',
                 'mcm_clip-vit-b16_1xb256_in1k-mos'):
        assert name in out, out[-3000:]
    out = mim(installed, 'search', 'cma_ood', '--valid-config', cwd=tmp_path)
    assert 'plp_clip-vit-b16_1xb8192_in1k' in out
    # the published numbers come with the model
    out = mim(installed, 'search', 'cma_ood', '--config',
              'cma-neglabel-fixed_clip-vit-b16_4xb128_in1k-mos', '--field',
              'imagenet-1k (mos)/fpr95', 'imagenet-1k (mos)/auroc',
              '--display-width', '400', cwd=tmp_path)
    assert '19.93' in out and '95.13' in out, out[-3000:]


def test_mim_train_and_test(installed, tmp_path):
    work = tmp_path / 'work'
    # run outside the checkout: mim must find the config in the package
    mim(installed, 'train', 'cma_ood', CONFIG, '--work-dir', str(work),
        '--cfg-options', *FAST, cwd=tmp_path)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    out = mim(installed, 'test', 'cma_ood', CONFIG, '--checkpoint',
              str(ckpt), '--work-dir', str(work), '--cfg-options', *FAST[4:],
              cwd=tmp_path)
    assert 'ID top-1 accuracy' in out and 'unseen_shapes' in out


def test_mim_test_zero_shot_with_checkpoint_none(installed, tmp_path):
    """mim test insists on --checkpoint; "none" tests the weights the config
    builds (zero-shot), and tools/test.py warns when they are random."""
    out = mim(installed, 'test', 'cma_ood', CONFIG, '--checkpoint', 'none',
              '--work-dir', str(tmp_path / 'work'), '--cfg-options',
              *FAST[4:], cwd=tmp_path)
    assert 'ID top-1 accuracy' in out and 'unseen_shapes' in out
    assert 'Testing a randomly initialised model' in out


def test_mim_needs_the_py_suffix(installed, tmp_path):
    """What README says: mim finds a config by its file name, .py included
    (mim's own lookup; a name without it is not found)."""
    env = dict(os.environ, PYTHONPATH=str(installed), PYTHONWARNINGS='ignore')
    exe = osp.join(osp.dirname(sys.executable), 'mim')
    proc = subprocess.run(
        [exe, 'train', 'cma_ood', CONFIG[:-3]], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "can not find the config file in codebase" in (
        proc.stdout + proc.stderr)
