"""Provenance of ood_results.json and OoDOutputHook, which writes the files
of a run from the metric's results."""
import datetime
import hashlib
import json
import types

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch import nn

import cma_ood  # noqa: F401
from cma_ood.engine.hooks import OoDOutputHook
from cma_ood.engine.hooks import ood_output_hook
from cma_ood.evaluation import OoDMetric, provenance
from cma_ood.evaluation.provenance import (PROVENANCE_KEYS,
                                           VERSIONED_MODULES, run_provenance,
                                           scorer_records, sha256_file,
                                           to_jsonable)
from cma_ood.models.ood_scorers.logit import EnergyScorer, MCMScorer


def test_sha256_file_streams_in_chunks(tmp_path, monkeypatch):
    data = np.random.default_rng(0).bytes(100_003)
    path = tmp_path / 'blob.pth'
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == want
    reads = []

    class Spy:
        def __init__(self, *args):
            self.f = open(*args)

        def read(self, n):
            reads.append(n)
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(provenance, 'open', Spy, raising=False)
    assert sha256_file(str(path), chunk_size=65536) == want
    # 100_003 bytes: one full read, one short, one at EOF; never all at once
    assert reads == [65536] * 3


class TinyModel(nn.Module):
    def __init__(self, arch='tiny-rn-32px',
                 ood_scorers=(dict(type='MCMScorer'), )):
        super().__init__()
        self.arch = arch
        self.ood_scorers = nn.ModuleList(
            [MCMScorer(temperature=2.0), EnergyScorer(name='E')])


def test_run_provenance_record(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text('model = dict(type="X")\n')
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'\x00weights' * 1000)
    scorer_cfgs = Config(dict(s=[dict(type='MCMScorer', temperature=2.0),
                                 dict(type='EnergyScorer', name='E',
                                      grid=(1, 2))])).s
    rec = run_provenance(str(cfg), str(ckpt), TinyModel(), scorer_cfgs,
                         pretrained='openai')
    assert tuple(rec) == PROVENANCE_KEYS
    assert rec['config_path'] == str(cfg)
    assert rec['config_sha256'] == hashlib.sha256(
        cfg.read_bytes()).hexdigest()
    assert rec['checkpoint_path'] == str(ckpt)
    assert rec['checkpoint_sha256'] == hashlib.sha256(
        ckpt.read_bytes()).hexdigest()
    assert rec['model_type'] == 'TinyModel'
    assert rec['model_arch'] == 'tiny-rn-32px'
    assert rec['model_pretrained'] == 'openai'
    assert rec['ood_scorers'] == [
        dict(type='MCMScorer', name='MCM', args=dict(temperature=2.0)),
        dict(type='EnergyScorer', name='E',
             args=dict(name='E', grid=[1, 2]))]
    assert list(rec['versions']) == list(VERSIONED_MODULES)
    assert rec['versions']['torch'] == str(torch.__version__)
    assert rec['versions']['numpy'] == np.__version__
    assert rec['versions']['cma_ood'] == cma_ood.__version__
    assert rec['versions']['clip']  # openai-clip's distribution version
    date = datetime.datetime.fromisoformat(rec['date_utc'])
    assert date.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - date).total_seconds()) < 120
    json.dumps(rec)  # serialisable as is


def test_zero_shot_url_and_python_configs():
    rec = run_provenance(None, None, None, versions={})
    assert rec['config_path'] is rec['config_sha256'] is None
    assert rec['checkpoint_path'] is rec['checkpoint_sha256'] is None
    assert rec['model_type'] is rec['model_arch'] is None
    assert rec['ood_scorers'] == []
    url = 'https://example.org/epoch_20.pth'
    rec = run_provenance(None, url, None, versions={},
                         hash_file=lambda p: pytest.fail('hashed a URL'))
    assert rec['checkpoint_path'] == url and rec['checkpoint_sha256'] is None


def test_scorer_settings_default_to_the_model_constructor():
    # no model.ood_scorers in the config: the model's default built them
    (rec, _) = scorer_records(TinyModel().ood_scorers,
                              provenance.configured_scorers(TinyModel(),
                                                            None))
    assert rec == dict(type='MCMScorer', name='MCM', args=None)  # 1 vs 2
    model = TinyModel()
    model.ood_scorers = model.ood_scorers[:1]
    assert scorer_records(
        model.ood_scorers, provenance.configured_scorers(model, None)) == [
            dict(type='MCMScorer', name='MCM', args={})]


def test_to_jsonable():
    assert to_jsonable(dict(a=(1, 2.5), b=np.float32(0.5), c=None,
                            d=MCMScorer, e=np.int64(3))) == dict(
        a=[1, 2.5], b=0.5, c=None,
        d='cma_ood.models.ood_scorers.logit.MCMScorer', e=3)


# ---------------------------------------------------------------- the hook
META = dict(classes=('a', 'b'), id_source='ID', ood_sources=('ID', 'far'))


def _samples():
    rng = np.random.default_rng(0)
    out = []
    for i, src in enumerate(['ID'] * 20 + ['far'] * 15):
        out.append(dict(ood_source=src, ood_index=i,
                        gt_label=torch.tensor([i % 2 if src == 'ID' else -1]),
                        pred_label=torch.tensor([0]),
                        ood_scores=dict(
                            MCM=torch.tensor(rng.normal(src == 'ID', 1.0)),
                            E=torch.tensor(rng.normal(src == 'ID', 2.0)))))
    return out


def _runner(tmp_path, metric, load_from):
    cfg_file = tmp_path / 'exp.py'
    cfg_file.write_text(
        "model = dict(type='TinyModel', arch='tiny-rn-32px',\n"
        "             ood_scorers=[dict(type='MCMScorer', temperature=2.0),\n"
        "                          dict(type='EnergyScorer', name='E')])\n")
    cfg = Config.fromfile(str(cfg_file))
    cfg.load_from = load_from
    evaluator = types.SimpleNamespace(metrics=[metric])
    return types.SimpleNamespace(cfg=cfg, model=TinyModel(),
                                 log_dir=str(tmp_path / 'log'),
                                 test_evaluator=evaluator,
                                 val_evaluator=evaluator)


def _evaluate(metric):
    metric.dataset_meta = META
    metric.process({}, _samples())
    return metric.evaluate(35)


def test_hook_writes_the_report_with_provenance(tmp_path, monkeypatch):
    ckpt = tmp_path / 'epoch_3.pth'
    ckpt.write_bytes(b'ckpt' * 5000)
    hashed = []
    monkeypatch.setattr(ood_output_hook, 'sha256_file',
                        lambda p: hashed.append(p) or sha256_file(p))
    logged = []
    from cma_ood.evaluation import outputs
    monkeypatch.setattr(outputs, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    metric = OoDMetric()
    runner = _runner(tmp_path, metric, str(ckpt))
    hook = OoDOutputHook()
    for epoch in range(2):  # e.g. a validation per epoch
        hook.before_val(runner)
        assert metric.out_dir == runner.log_dir and metric.defer_outputs
        json_path = tmp_path / 'log' / 'ood_results.json'
        if json_path.exists():
            json_path.unlink()
        got = _evaluate(metric)
        assert not json_path.exists()  # the metric left it to the hook
        hook.after_val_epoch(runner, got)
        assert json_path.exists()
    # the checkpoint and the config were read once, not once per epoch
    assert sorted(hashed) == sorted([str(ckpt), runner.cfg.filename])
    with open(tmp_path / 'log' / 'ood_results.json') as f:
        report = json.load(f)
    assert set(report) == {'id_source', 'metric_protocol', 'scores',
                           'num_samples', 'id_accuracy_top1', 'provenance',
                           'bootstrap'}
    assert report['scores']['E']['far']['FPR95'] == pytest.approx(
        got['ood/E/far/FPR95'])
    prov = report['provenance']
    assert tuple(prov) == PROVENANCE_KEYS
    assert prov['config_path'] == runner.cfg.filename
    with open(runner.cfg.filename, 'rb') as f:
        assert prov['config_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert prov['checkpoint_path'] == str(ckpt)
    assert prov['checkpoint_sha256'] == hashlib.sha256(
        ckpt.read_bytes()).hexdigest()
    assert prov['model_arch'] == 'tiny-rn-32px'
    assert prov['ood_scorers'] == [
        dict(type='MCMScorer', name='MCM', args=dict(temperature=2.0)),
        dict(type='EnergyScorer', name='E', args=dict(name='E'))]
    log_dir = runner.log_dir
    assert logged == [f'OoD results: {log_dir}/ood_results.json; plots '
                      f'(PNG 200 dpi + PDF): {log_dir}/ood_plots',
                      f'OoD per-image table: {log_dir}/ood_per_image.csv'
                      ] * 2
    assert sorted(p.name for p in (tmp_path / 'log' / 'ood_plots').iterdir()
                  ) == ['E_far.pdf', 'E_far.png', 'MCM_far.pdf',
                        'MCM_far.png', 'summary.pdf', 'summary.png']


def test_hook_keeps_a_configured_out_dir_and_save_plots(tmp_path):
    metric = OoDMetric(out_dir=str(tmp_path / 'mine'), save_plots=False)
    runner = _runner(tmp_path, metric, None)
    hook = OoDOutputHook()
    hook.before_test(runner)
    assert metric.out_dir == str(tmp_path / 'mine')
    _evaluate(metric)
    hook.after_test_epoch(runner, {})
    assert sorted(p.name for p in (tmp_path / 'mine').iterdir()) == [
        'ood_per_image.csv', 'ood_results.json']
    with open(tmp_path / 'mine' / 'ood_results.json') as f:
        prov = json.load(f)['provenance']
    assert prov['checkpoint_path'] is prov['checkpoint_sha256'] is None


def test_hook_writes_nothing_off_the_main_process(tmp_path, monkeypatch):
    monkeypatch.setattr(ood_output_hook, 'is_main_process', lambda: False)
    metric = OoDMetric()
    runner = _runner(tmp_path, metric, None)
    hook = OoDOutputHook()
    hook.before_test(runner)
    _evaluate(metric)
    hook.after_test_epoch(runner, {})
    assert not (tmp_path / 'log').exists()


def test_hook_still_points_other_metrics_with_an_out_dir(tmp_path):
    other = types.SimpleNamespace(out_dir=None)
    runner = _runner(tmp_path, other, None)
    OoDOutputHook().before_test(runner)
    assert other.out_dir == runner.log_dir
    assert not hasattr(other, 'defer_outputs')


def test_versions_without_scanning_every_installed_package(monkeypatch):
    """clip has no __version__: its version comes from the openai-clip
    distribution, without importlib.metadata.packages_distributions (which
    reads the metadata of every installed package: seconds per test run).
    """
    import importlib.metadata

    from cma_ood.evaluation import provenance

    def scan():
        raise AssertionError('packages_distributions called')

    monkeypatch.setattr(importlib.metadata, 'packages_distributions', scan)
    versions = provenance.package_versions()
    assert versions['clip'] == importlib.metadata.version('openai-clip')
    assert versions['mmengine'] == importlib.metadata.version('mmengine')
    assert provenance.module_version('no_such_module_xyz') is None
