"""docs/custom_data.md as written: its configs are the shipped files, and
its commands run on generated JPEG folders (zero-shot with ViT-B/16, CMA
fine-tuning then testing with a tiny model), from a folder holding only
data/."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers import REPO

pytestmark = pytest.mark.slow

DOC = Path(REPO) / 'docs' / 'custom_data.md'
BASE = 'configs/_base_/datasets/custom_folders.py'
ZERO_SHOT = 'configs/custom/neglabel_clip-vit-b16_1xb64_custom.py'
CMA = 'configs/custom/cma_clip-vit-b16_1xb64_custom.py'
CLASSES = ['apple', 'bread', 'cheese', 'donut', 'egg', 'fig']
# what the doc's "Trying it without the weights" adds, plus no workers
FAST = ['model.pretrained=None', 'model.ood_scorers.0.lexnames=[noun.Tops,'
        'adj.ppl]', 'model.ood_scorers.0.ngroup=10',
        'model.ood_scorers.0.cache_dir=False',
        'test_dataloader.num_workers=0']


def code_blocks(text, lang):
    return re.findall(rf'```{lang}\n(.*?)```', text, flags=re.S)


def test_doc_shows_the_shipped_configs_verbatim():
    blocks = code_blocks(DOC.read_text(), 'python')
    for path in (BASE, ZERO_SHOT, CMA):
        assert (Path(REPO) / path).read_text() in blocks, path
    commands = '\n'.join(code_blocks(DOC.read_text(), 'bash'))
    assert f'python tools/test.py {ZERO_SHOT}' in commands
    assert f'python tools/train.py {CMA}' in commands


def jpeg(path, seed, size=(320, 240)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(small).resize(size).save(path, quality=90)


@pytest.fixture(scope='module')
def custom_root(tmp_path_factory):
    """data/custom as the doc lays it out: 6 classes x 2 train/val JPEGs,
    OoD sets near/ and far/ with a sub-folder each."""
    root = tmp_path_factory.mktemp('custom')
    seed = 0
    for name in CLASSES:
        for split in ('train', 'val'):
            for i in range(2):
                jpeg(root / 'data/custom' / split / name / f'{i}.jpg', seed)
                seed += 1
    for ood in ('near', 'far'):
        for i in range(3):
            jpeg(root / 'data/custom/ood' / ood / 'sub' / f'{i}.jpg', seed)
            seed += 1
    return root


def run(root, *args):
    """A documented command, run from ``root`` (which holds data/)."""
    env = dict(os.environ, PYTHONWARNINGS='ignore',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    script, *rest = args
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *[
        os.path.join(REPO, a) if a.startswith('configs/') else a
        for a in rest]], cwd=root, env=env, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def report(work_dir):
    found = sorted(Path(work_dir).glob('*/ood_results.json'))
    assert found, f'no ood_results.json under {work_dir}'
    return json.loads(found[-1].read_text())


def test_zero_shot_on_own_folders(custom_root):
    work = custom_root / 'work_zero_shot'
    out = run(custom_root, 'tools/test.py', ZERO_SHOT, '--work-dir',
              str(work), '--cfg-options', *FAST)
    assert 'ID top-1 accuracy' in out
    res = report(work)
    assert res['num_samples'] == dict(ID=12, near=3, far=3)
    assert set(res['scores']) == {'NegLabel', 'MCM'}
    assert set(res['scores']['NegLabel']) == {'near', 'far', 'mean'}


def test_cma_fine_tuning_then_testing_on_own_folders(custom_root):
    work = custom_root / 'work_cma'
    size = []  # the tiny test model's 32 px instead of ViT-B/16's 224
    for loader in ('train', 'val', 'test'):
        size.append(f'{loader}_dataloader.dataset.pipeline.1.scale=32')
        if loader != 'train':
            size.append(f'{loader}_dataloader.dataset.pipeline.2.crop_size=32')
        size.append(f'{loader}_dataloader.num_workers=0')
    tiny = ['model.arch=tiny-vit-32px', 'train_cfg.max_epochs=1',
            'param_scheduler.0.warmup_iters=1',
            'train_dataloader.persistent_workers=False',
            'train_dataloader.batch_size=4', *size, *FAST]
    out = run(custom_root, 'tools/train.py', CMA, '--work-dir', str(work),
              '--cfg-options', *tiny)
    assert 'accuracy/top1' in out  # validation on val/ after the epoch
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    run(custom_root, 'tools/test.py', CMA, str(ckpt), '--work-dir',
        str(work), '--cfg-options', *tiny)
    res = report(work)
    assert res['num_samples'] == dict(ID=12, near=3, far=3)


def test_documented_list_file_variants_build(custom_root, tmp_path):
    """The doc's CustomDataset-with-a-list-file and ImageListDataset
    snippets, on copies of the same images."""
    import cma_ood  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    root = tmp_path / 'data' / 'custom'
    (root / 'images').mkdir(parents=True)
    lines = []
    for label, name in enumerate(CLASSES):
        src = custom_root / 'data/custom/val' / name / '0.jpg'
        dst = root / 'images' / f'{name}.jpg'
        dst.write_bytes(src.read_bytes())
        lines.append(f'{name}.jpg {label}')
    (root / 'meta').mkdir()
    (root / 'meta' / 'val.txt').write_text('\n'.join(lines) + '\n')
    (root / 'lists').mkdir()
    (root / 'lists' / 'ood_textures.txt').write_text('apple.jpg 0\n')
    ds = DATASETS.build(dict(
        type='CustomDataset', data_root=str(root), ann_file='meta/val.txt',
        data_prefix='images', metainfo=dict(classes=CLASSES)))
    assert list(ds.metainfo['classes']) == CLASSES and len(ds) == 6
    assert ds.get_data_info(2)['gt_label'] == 2
    ood = DATASETS.build(dict(
        type='ImageListDataset', data_root=str(root),
        ann_file='lists/ood_textures.txt', data_prefix='images',
        with_label=False))
    assert len(ood) == 1


def test_imagenet_type_on_own_folders_names_the_set_and_the_fix(
        custom_root):
    import cma_ood  # noqa: F401
    from cma_ood.datasets import OoDConcatDataset
    root = custom_root / 'data' / 'custom'
    with pytest.raises(AssertionError) as err:
        OoDConcatDataset(
            id_dataset=dict(type='ImageNet', data_root=str(root),
                            split='val'),
            ood_datasets=dict(far=dict(type='CustomDataset',
                                       data_root=str(root / 'ood/far'),
                                       with_label=False)))
    msg = str(err.value)
    assert msg.startswith("OoDConcatDataset: cannot build the ID set 'ID' "
                          '(ImageNet): The number of subfolders (6)')
    assert "type='CustomDataset'" in msg and 'docs/custom_data.md' in msg
