"""Install cma_ood; ship configs/ and tools/ in cma_ood/.mim for `mim`.

Like mmpretrain, the package carries its configs and tools under
``cma_ood/.mim`` so that ``mim train cma_ood CONFIG`` and ``mim test`` find
them. Regular builds (``pip install .``, ``mim install .``, wheels) copy
them there; editable installs (``pip install -e .``, which modern pip runs
as setuptools' ``editable_wheel``, or the legacy ``develop``) link them so
edits show up at once.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'txtfiles', 'model-index.yml')


def read_requirements(name):
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [
            line.split('#')[0].strip() for line in f
            if line.split('#')[0].strip()
        ]


def version():
    scope = {}
    with open(osp.join(HERE, 'cma_ood', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def add_mim_extension():
    """Copy or link configs/, tools/, txtfiles/ and model-index.yml into
    cma_ood/.mim."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'symlink'
    elif commands & {'install', 'bdist_wheel', 'sdist', 'build', 'build_py'}:
        mode = 'copy'
    else:
        return
    mim_root = osp.join(HERE, 'cma_ood', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_root, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if not osp.exists(src):
            continue
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_root), dst)
        elif osp.isfile(src):
            shutil.copyfile(src, dst)
        else:
            shutil.copytree(
                src, dst,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='cma_ood',
        version=version(),
        description='CLIP-based out-of-distribution detection (CMA '
        'fine-tuning, NegLabel and baselines) as an MMPretrain plugin',
        long_description=open(osp.join(HERE, 'README.md')).read()
        if osp.exists(osp.join(HERE, 'README.md')) else '',
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        python_requires='>=3.10',
        packages=find_packages(exclude=('configs', 'tools', 'tests',
                                        'docs')),
        include_package_data=True,
        package_data={'cma_ood': ['.mim/**/*']},
        install_requires=read_requirements('runtime.txt') +
        read_requirements('mminstall.txt'),
        extras_require=dict(
            tests=read_requirements('tests.txt'),
            # TensorboardVisBackend (README "Logging to TensorBoard")
            tensorboard=read_requirements('tensorboard.txt'),
            # model.arch='open_clip:...' (docs/backbones.md)
            open_clip=read_requirements('open_clip.txt'),
            # timm backbones as feature extractors (docs/backbones.md)
            timm=read_requirements('timm.txt')),
        zip_safe=False,
    )
