"""pytest configuration shared by the tests."""
import warnings


def pytest_configure(config):
    # third-party deprecation noise (clip imports pkg_resources; mmcv-lite
    # lacks compiled ops we never use)
    config.addinivalue_line('filterwarnings',
                            'ignore:pkg_resources is deprecated')
    config.addinivalue_line('filterwarnings',
                            'ignore:Fail to import ``MultiScaleDeformable')
    warnings.filterwarnings('ignore', 'pkg_resources is deprecated')
