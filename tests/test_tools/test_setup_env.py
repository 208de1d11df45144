"""tools/setup_env.sh says what it is about to install, and how big."""
import os
import subprocess

from _helpers import REPO

SCRIPT = os.path.join(REPO, 'tools', 'setup_env.sh')


def dry_run(tmp_path, **env):
    venv = tmp_path / 'venv'
    proc = subprocess.run(
        ['bash', SCRIPT, '--dry-run'],
        env=dict(os.environ, VENV=str(venv), **env),
        capture_output=True, text=True, timeout=60, check=True)
    assert not venv.exists()  # a dry run installs nothing
    return proc.stdout


def test_default_plan_names_the_cuda_build_and_its_size(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_SPEC'}
    venv = tmp_path / 'venv'
    out = subprocess.run(
        ['bash', SCRIPT, '--dry-run'], env=dict(env, VENV=str(venv)),
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert f'virtualenv {venv}' in out
    assert 'torch: torch==2.14.1 torchvision==0.29.1 -- CUDA build from ' \
        'PyPI, about 5 GB' in out
    assert 'TORCH_SPEC' in out and not venv.exists()


def test_cpu_index_plan_is_the_small_build(tmp_path):
    spec = ('torch torchvision --index-url '
            'https://download.pytorch.org/whl/cpu')
    out = dry_run(tmp_path, TORCH_SPEC=spec)
    assert f'torch: {spec} -- CPU build, about 1 GB' in out


def test_unknown_argument_is_refused(tmp_path):
    proc = subprocess.run(['bash', SCRIPT, '--bogus'], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and 'usage' in proc.stderr
