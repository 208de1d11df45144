"""Zero-shot OoD evaluation end to end: tools/test.py without a checkpoint
on generated images with a tiny random CLIP, NegLabel (mined from a small
candidate list) and MCM -> the printed table, the JSON report with its
provenance, the PNG/PDF plots and the summary figure."""
import datetime
import glob
import hashlib
import json
import os.path as osp

import pytest
import torch

from _helpers import DEMO_CONFIG, run_tool

pytestmark = pytest.mark.slow

NOUNS = ['table', 'river', 'engine', 'violin', 'cloud', 'ladder', 'bridge',
         'pencil', 'garden', 'rocket', 'window', 'forest']
ADJS = ['wooden', 'shiny', 'ancient', 'tiny', 'noisy', 'bright']


def test_zero_shot_neglabel_table_json_and_plots(tmp_path):
    txt = tmp_path / 'txt'
    txt.mkdir()
    (txt / 'noun.artifact.txt').write_text('\n'.join(NOUNS) + '\n')
    (txt / 'adj.all.txt').write_text('\n'.join(ADJS) + '\n')
    cfg = tmp_path / 'zero_shot.py'
    cfg.write_text(f'''
_base_ = [{DEMO_CONFIG!r}]
model = dict(ood_scorers=[
    dict(type='NegLabelScorer', txt_dir={str(txt)!r},
         lexnames=['noun.artifact', 'adj.all'], ratio=0.5, ngroup=2,
         cache_dir={str(tmp_path / 'cache')!r},
         dump_labels={str(tmp_path / 'neg.txt')!r}),
    dict(type='MCMScorer'),
])
_shapes = dict(num_per_class=6)
test_dataloader = dict(num_workers=0, dataset=dict(
    id_dataset=_shapes,
    ood_datasets=dict(unseen_shapes=_shapes, textures=_shapes,
                      noise=_shapes)))
''')
    work = tmp_path / 'work'
    out = run_tool('tools/test.py', str(cfg), '--work-dir', str(work))
    log = out.stdout + out.stderr
    for name in ('NegLabel', 'MCM', 'unseen_shapes', 'textures', 'noise',
                 'mean', 'near', 'far', 'ID top-1 accuracy'):
        assert name in log, name
    (report_path, ) = glob.glob(str(work / '*' / 'ood_results.json'))
    with open(report_path) as f:
        report = json.load(f)
    assert set(report['scores']) == {'NegLabel', 'MCM'}
    assert report['num_samples'] == {'ID': 36, 'unseen_shapes': 24,
                                     'textures': 6, 'noise': 6}
    plot_dir = osp.join(osp.dirname(report_path), 'ood_plots')
    for score in ('NegLabel', 'MCM'):
        assert set(report['scores'][score]) == {
            'unseen_shapes', 'textures', 'noise', 'mean', 'near', 'far'}
        for ood_set in ('unseen_shapes', 'textures', 'noise'):
            png = osp.join(plot_dir, f'{score}_{ood_set}.png')
            assert osp.getsize(png) > 1000
            with open(png[:-4] + '.pdf', 'rb') as f:
                assert f.read(5) == b'%PDF-'
    for ext in ('png', 'pdf'):
        assert osp.getsize(osp.join(plot_dir, f'summary.{ext}')) > 1000
    # one line says where the files went (written by OoDOutputHook)
    assert (f'OoD results: {report_path}; plots (PNG 200 dpi + PDF): '
            f'{plot_dir}\n') in log
    # provenance of the run
    assert report['metric_protocol'] == 'mos'
    prov = report['provenance']
    assert set(prov) == {
        'date_utc', 'config_path', 'config_sha256', 'checkpoint_path',
        'checkpoint_sha256', 'model_type', 'model_arch', 'model_pretrained',
        'ood_scorers', 'versions'}
    assert prov['config_path'] == str(cfg)
    assert prov['config_sha256'] == hashlib.sha256(
        cfg.read_bytes()).hexdigest()
    assert prov['checkpoint_path'] is None  # zero-shot
    assert prov['checkpoint_sha256'] is None
    assert prov['model_type'] == 'MultiModalClassifier'
    assert prov['model_arch'] == 'tiny-rn-32px'
    assert prov['model_pretrained'] is None
    assert prov['ood_scorers'] == [
        dict(type='NegLabelScorer', name='NegLabel',
             args=dict(txt_dir=str(txt),
                       lexnames=['noun.artifact', 'adj.all'], ratio=0.5,
                       ngroup=2, cache_dir=str(tmp_path / 'cache'),
                       dump_labels=str(tmp_path / 'neg.txt'))),
        dict(type='MCMScorer', name='MCM', args={})]
    assert prov['versions']['torch'] == str(torch.__version__)
    assert set(prov['versions']) == {'cma_ood', 'torch', 'torchvision',
                                     'mmengine', 'mmpretrain', 'mmcv',
                                     'numpy', 'clip'}
    assert all(prov['versions'].values())
    date = datetime.datetime.fromisoformat(prov['date_utc'])
    assert date.utcoffset() == datetime.timedelta(0)
    # int(12 * 0.5) nouns + int(6 * 0.5) adjectives were mined and dumped
    lines = (tmp_path / 'neg.txt').read_text().splitlines()
    assert len(lines) == 9
    assert sum(line.startswith('n\t') for line in lines) == 6
