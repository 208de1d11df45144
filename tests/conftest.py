"""pytest configuration shared by the tests."""
import warnings

import pytest
import torch


def pytest_configure(config):
    # `pytest -m "not slow"` skips the end-to-end runs of tools and the demo
    # (minutes); `-m "not multiprocess"` the tests that start process groups
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs of the tools (seconds to minutes)')
    config.addinivalue_line(
        'markers', 'multiprocess: starts a 2-process gloo group')
    # third-party deprecation noise (clip imports pkg_resources; mmcv-lite
    # lacks compiled ops we never use)
    config.addinivalue_line('filterwarnings',
                            'ignore:pkg_resources is deprecated')
    config.addinivalue_line('filterwarnings',
                            'ignore:Fail to import ``MultiScaleDeformable')
    warnings.filterwarnings('ignore', 'pkg_resources is deprecated')


@pytest.fixture
def single_thread():
    """One intra-op thread for tests of tiny models: avoids OpenMP
    spin-waiting when the 2-core machine is busy; restored afterwards.
    Test modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    num = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num)
