"""Helpers shared by the tests (the tests directory is on sys.path)."""
import os
import os.path as osp
import subprocess
import sys


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
