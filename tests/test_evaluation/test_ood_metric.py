"""OoDMetric: per-set/mean figures, dedup, errors, outputs, distributed."""
import json
import os.path as osp
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import cma_ood  # noqa: F401
from _helpers import REPO
from cma_ood.evaluation import OoDMetric, ood_metrics

META = dict(classes=('a', 'b', 'c'), id_source='ID',
            ood_sources=('ID', 'near', 'far1', 'far2'),
            ood_groups=dict(far=['far1', 'far2']))


def make_samples(seed=0, sizes=(('ID', 40), ('near', 25), ('far1', 30),
                                ('far2', 9))):
    """Fake predict() outputs in dataset order, as dicts (what the
    evaluator passes to process)."""
    rng = np.random.default_rng(seed)
    samples, index = [], 0
    for source, n in sizes:
        shift = 1.0 if source == 'ID' else 0.0
        for _ in range(n):
            gt = int(rng.integers(3)) if source == 'ID' else -1
            pred = gt if rng.random() < 0.7 else int(rng.integers(3))
            samples.append(
                dict(ood_source=source, ood_index=index,
                     gt_label=torch.tensor([gt]),
                     pred_label=torch.tensor([pred]),
                     ood_scores=dict(
                         A=torch.tensor(rng.normal(shift, 1.0)),
                         B=torch.tensor(float(rng.integers(0, 4)) + shift))))
            index += 1
    return samples


def expected(samples, protocol='mos'):
    out = {}
    id_ = [s for s in samples if s['ood_source'] == 'ID']
    out['accuracy/top1'] = 100 * np.mean(
        [int(s['pred_label']) == int(s['gt_label']) for s in id_])
    for score in ('A', 'B'):
        def scores(src):
            return np.array([float(s['ood_scores'][score]) for s in samples
                             if s['ood_source'] == src])
        per = {src: ood_metrics(scores('ID'), scores(src), protocol=protocol)
               for src in ('near', 'far1', 'far2')}
        for src, vals in per.items():
            for k, v in vals.items():
                out[f'{score}/{src}/{k}'] = v
        for k in ('FPR95', 'AUROC', 'AUPR_IN', 'AUPR_OUT'):
            out[f'{score}/mean/{k}'] = np.mean([per[s][k] for s in per])
            out[f'{score}/far/{k}'] = np.mean(
                [per[s][k] for s in ('far1', 'far2')])
    return out


def run_metric(samples, size=None, **kwargs):
    metric = OoDMetric(**kwargs)
    metric.dataset_meta = META
    for i in range(0, len(samples), 7):
        metric.process({}, samples[i:i + 7])
    return metric.evaluate(size or len(samples))


def assert_metrics_equal(got, want):
    assert set(got) == {f'ood/{k}' for k in want}
    for k, v in want.items():
        assert got[f'ood/{k}'] == pytest.approx(v, abs=1e-9), k


def test_metrics_match_ood_metrics_per_set_mean_and_group(tmp_path):
    samples = make_samples()
    got = run_metric(samples, out_dir=str(tmp_path))
    assert_metrics_equal(got, expected(samples))
    with open(tmp_path / 'ood_results.json') as f:
        report = json.load(f)
    assert report['num_samples'] == {'ID': 40, 'near': 25, 'far1': 30,
                                     'far2': 9}
    assert list(report['scores']['A']) == ['near', 'far1', 'far2', 'mean',
                                           'far']
    assert report['scores']['B']['far1']['FPR95'] == pytest.approx(
        got['ood/B/far1/FPR95'])
    for score in 'AB':
        for src in ('near', 'far1', 'far2'):
            assert osp.getsize(tmp_path / 'ood_plots' /
                               f'{score}_{src}.png') > 1000


def test_direct_use_writes_pdfs_and_summary_and_keeps_results(tmp_path):
    samples = make_samples(seed=7)
    metric = OoDMetric(out_dir=str(tmp_path), protocol='cma')
    metric.dataset_meta = META
    metric.process({}, samples)
    got = metric.evaluate(len(samples))
    plot_dir = tmp_path / 'ood_plots'
    assert sorted(p.name for p in plot_dir.iterdir()) == sorted(
        f'{stem}.{ext}' for stem in ['summary'] + [
            f'{s}_{src}' for s in 'AB' for src in ('near', 'far1', 'far2')]
        for ext in ('png', 'pdf'))
    with open(tmp_path / 'ood_results.json') as f:
        assert json.load(f) == metric.last_report
    assert 'provenance' not in metric.last_report  # only OoDOutputHook adds it
    assert metric.last_report['scores']['A']['far']['AUROC'] == pytest.approx(
        got['ood/A/far/AUROC'])
    assert list(metric.last_scores) == ['A', 'B']
    assert list(metric.last_scores['A']) == ['ID', 'near', 'far1', 'far2']
    want = np.array([float(s['ood_scores']['B']) for s in samples
                     if s['ood_source'] == 'far2'])
    np.testing.assert_array_equal(metric.last_scores['B']['far2'], want)


def test_deferred_outputs_are_left_to_the_hook(tmp_path):
    samples = make_samples(seed=8)
    metric = OoDMetric(out_dir=str(tmp_path))
    metric.defer_outputs = True
    metric.dataset_meta = META
    metric.process({}, samples)
    got = metric.evaluate(len(samples))
    assert_metrics_equal(got, expected(samples))
    assert list(tmp_path.iterdir()) == []
    assert metric.last_report['metric_protocol'] == 'mos'


def test_duplicates_count_once():
    samples = make_samples(seed=1)
    padded = samples + samples[:5] + samples[-3:]
    metric = OoDMetric()
    metric.dataset_meta = META
    metric.process({}, padded)
    # evaluate with the padded length: mmengine does not truncate here
    got = metric.evaluate(len(padded))
    assert_metrics_equal(got, expected(samples))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_scores_name_the_dataset(bad):
    samples = make_samples(seed=2)
    samples[50]['ood_scores']['B'] = torch.tensor(bad)
    assert samples[50]['ood_source'] == 'near'
    with pytest.raises(ValueError,
                       match="score 'B' .* 1 of 25 samples of dataset "
                       "'near'"):
        run_metric(samples)


def test_untagged_samples_are_an_error():
    metric = OoDMetric()
    with pytest.raises(KeyError, match='OoDConcatDataset'):
        metric.process({}, [dict(pred_label=torch.tensor([0]))])


def test_table_lists_every_set_and_score(caplog):
    from cma_ood.evaluation import format_ood_table
    samples = make_samples(seed=3)
    metric = OoDMetric()
    metric.dataset_meta = META
    metric.process({}, samples)
    metric.compute_metrics(metric.results)
    report = dict(id_accuracy_top1=71.5, num_samples={'near': 3},
                  scores=dict(A=dict(near=dict(FPR95=12.345, AUROC=90.0,
                                               AUPR_IN=80.0, AUPR_OUT=70.0))))
    table = format_ood_table(report)
    assert 'ID top-1 accuracy: 71.50' in table
    assert '12.35' in table and 'near' in table


# ---------------------------------------------------------------- protocols
def _capture_log(monkeypatch):
    from cma_ood.evaluation import ood_metric
    logged = []
    monkeypatch.setattr(ood_metric, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    return logged


def test_default_protocol_is_mos_in_table_and_json(tmp_path, monkeypatch):
    logged = _capture_log(monkeypatch)
    samples = make_samples(seed=5)
    got = run_metric(samples, out_dir=str(tmp_path), save_plots=False)
    assert_metrics_equal(got, expected(samples))
    with open(tmp_path / 'ood_results.json') as f:
        report = json.load(f)
    assert report['metric_protocol'] == 'mos'
    (table, ) = logged
    assert "OoD detection, 'mos' metrics (ID positive), in %" in table


@pytest.mark.parametrize('protocol,positive', [('cma', 'ID positive'),
                                               ('openood', 'OoD positive')])
def test_protocol_reaches_numbers_table_and_json(protocol, positive,
                                                 tmp_path, monkeypatch):
    logged = _capture_log(monkeypatch)
    samples = make_samples(seed=6)
    got = run_metric(samples, out_dir=str(tmp_path), save_plots=False,
                     protocol=protocol)
    want = expected(samples, protocol=protocol)
    assert_metrics_equal(got, want)
    # the protocol changes the figures (the B scores are heavily tied)
    mos = expected(samples)
    assert any(abs(want[k] - mos[k]) > 1e-6 for k in want if 'FPR95' in k)
    with open(tmp_path / 'ood_results.json') as f:
        report = json.load(f)
    assert report['metric_protocol'] == protocol
    # every key of the report is still there (and the bootstrap settings)
    assert set(report) == {'id_source', 'metric_protocol', 'scores',
                           'num_samples', 'id_accuracy_top1', 'bootstrap'}
    assert report['id_source'] == 'ID'
    assert report['id_accuracy_top1'] == pytest.approx(
        want['accuracy/top1'])
    for score in 'AB':
        for src in ('near', 'far1', 'far2', 'mean', 'far'):
            for key in ('FPR95', 'AUROC', 'AUPR_IN', 'AUPR_OUT'):
                assert report['scores'][score][src][key] == pytest.approx(
                    want[f'{score}/{src}/{key}'], abs=1e-9)
    (table, ) = logged
    assert f"OoD detection, '{protocol}' metrics ({positive}), in %" in table
    assert f"{want['B/far1/FPR95']:.2f}" in table
    from cma_ood.evaluation import format_ood_table
    assert f"'{protocol}' metrics" in format_ood_table(report)


def test_table_of_a_report_without_protocol_says_mos():
    from cma_ood.evaluation import format_ood_table
    report = dict(num_samples={'near': 3},
                  scores=dict(A=dict(near=dict(FPR95=1.0, AUROC=2.0,
                                               AUPR_IN=3.0, AUPR_OUT=4.0))))
    assert "'mos' metrics (ID positive)" in format_ood_table(report)


@pytest.mark.parametrize('bad', ['OpenOOD', 'fpr', None])
def test_unknown_protocol_is_an_error_at_construction(bad):
    with pytest.raises(ValueError) as info:
        OoDMetric(protocol=bad)
    msg = str(info.value)
    assert 'OoDMetric' in msg and repr(bad) in msg
    assert "'mos', 'cma', 'openood'" in msg


def test_openood_base_config_evaluator_uses_openood_protocol():
    from mmengine.config import Config
    from mmpretrain.registry import METRICS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/imagenet_ood_openood_v1.5.py'))
    assert cfg.test_evaluator == dict(type='OoDMetric', protocol='openood')
    metric = METRICS.build(cfg.test_evaluator)
    assert isinstance(metric, OoDMetric) and metric.protocol == 'openood'


# ---------------------------------------------------------------- distributed
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_worker(rank, world_size, port, samples, queue):
    import torch.distributed as dist
    from mmengine.dataset import DefaultSampler
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    try:
        sampler = DefaultSampler(list(range(len(samples))), shuffle=False)
        metric = OoDMetric()
        metric.dataset_meta = META
        mine = [samples[i] for i in sampler]
        for i in range(0, len(mine), 4):
            metric.process({}, mine[i:i + 4])
        result = metric.evaluate(len(samples))
        queue.put((rank, len(mine), result))
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_distributed_collection_with_uneven_shards():
    samples = make_samples(seed=4, sizes=(('ID', 13), ('near', 6),
                                          ('far1', 5), ('far2', 3)))
    assert len(samples) % 2 == 1  # the sampler pads one duplicate
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = mp.start_processes(_dist_worker,
                               args=(2, _free_port(), samples, queue),
                               nprocs=2, join=False, start_method='spawn')
    results = dict((r, (n, m)) for r, n, m in
                   (queue.get(timeout=120) for _ in range(2)))
    procs.join(timeout=60)
    assert results[0][0] == results[1][0] == 14  # 27 samples + 1 padding
    assert_metrics_equal(results[0][1], expected(samples))
    assert results[1][1] == results[0][1]  # broadcast to every rank
