"""OoDMetric's diagnostics: bootstrap intervals, seed variance, the
per-image CSV and the contact sheets (docs/diagnostics.md)."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import cma_ood  # noqa: F401
from cma_ood.evaluation import OoDMetric, ood_metrics
from cma_ood.evaluation.contact_sheet import (CONTACT_DPI,
                                              contact_sheet_pixels,
                                              contact_sheet_size,
                                              format_score, make_thumbnail,
                                              merge_extremes,
                                              select_extremes)
from cma_ood.evaluation.functional import bootstrap_ood_metrics
from cma_ood.evaluation.ood_metric import _batch_image, seed_variance

CLASSES = ('circle', 'square', 'triangle')
META = dict(classes=CLASSES, id_source='ID',
            ood_sources=('ID', 'near', 'far1', 'far2'),
            ood_groups=dict(far=['far1', 'far2']))
SIZES = (('ID', 40), ('near', 25), ('far1', 30), ('far2', 9))
KEYS = ('FPR95', 'AUROC', 'AUPR_IN', 'AUPR_OUT')


def make_samples(seed=0, sizes=SIZES, seeds=(), image_hw=(12, 10)):
    """Fake predict() outputs in dataset order (dicts, as the evaluator
    passes them), with the per-image fields of predict and an input image
    per sample whose pixels encode its index."""
    rng = np.random.default_rng(seed)
    samples, images, index = [], [], 0
    for source, n in sizes:
        shift = 1.0 if source == 'ID' else 0.0
        for _ in range(n):
            gt = int(rng.integers(3)) if source == 'ID' else -1
            scores = dict(A=float(rng.normal(shift, 1.0)),
                          # heavily tied
                          N=float(np.round(rng.normal(shift, 1.0), 0)))
            for s in seeds:
                scores[f'N@seed={s}'] = float(rng.normal(shift, 1.0))
            sample = dict(
                ood_source=source, ood_index=index,
                gt_label=torch.tensor([gt]),
                pred_label=torch.tensor([int(rng.integers(3))]),
                pred_cos=float(rng.uniform(0.1, 0.4)),
                ood_scores={k: torch.tensor(v) for k, v in scores.items()},
                ood_details=dict(N=dict(top_negatives=[
                    f'neg{index % 7}', f'neg{index % 5}', 'x'])))
            if source == 'ID':
                sample['img_path'] = f'/data/id/{index:04d}.jpg'
            samples.append(sample)
            img = np.zeros((3, *image_hw), np.uint8)
            img[0] = index % 256          # B
            img[1] = 7                    # G
            img[2] = (3 * index) % 256    # R
            img[:, 0, 0] = 255            # a corner marks the orientation
            images.append(torch.from_numpy(img))
            index += 1
    return samples, images


def score_arrays(samples, name):
    out = {}
    for s in samples:
        out.setdefault(s['ood_source'], []).append(
            float(s['ood_scores'][name]))
    return {k: np.array(v) for k, v in out.items()}


def feed(metric, samples, images, order=None, batch=8, pad=()):
    """process() in batches of ``order`` (a permutation) plus padding
    repeats, the inputs of each batch stacked as stacked_collate does."""
    order = list(range(len(samples)) if order is None else order) + list(pad)
    for i in range(0, len(order), batch):
        part = order[i:i + batch]
        metric.process({'inputs': torch.stack([images[j] for j in part])},
                       [samples[j] for j in part])
    return len(order)


def run(samples, images=None, **kwargs):
    metric = OoDMetric(**kwargs)
    metric.dataset_meta = META
    size = feed(metric, samples, images or [torch.zeros(3, 2, 2,
                                            dtype=torch.uint8)] * len(samples))
    return metric, metric.evaluate(size)


# ---------------------------------------------------------------- intervals
def test_intervals_match_the_bootstrap_in_json_and_table(tmp_path,
                                                         monkeypatch):
    from cma_ood.evaluation import ood_metric
    logged = []
    monkeypatch.setattr(ood_metric, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    samples, _ = make_samples(seed=1)
    metric, got = run(samples, out_dir=str(tmp_path), save_plots=False,
                      bootstrap=200, bootstrap_seed=5, ci=0.9,
                      protocol='cma')
    with open(tmp_path / 'ood_results.json') as f:
        report = json.load(f)
    assert report['bootstrap']['resamples'] == 200
    assert report['bootstrap']['seed'] == 5
    assert report['bootstrap']['level'] == 0.9
    # the returned metrics keep their keys (no interval ends)
    assert not [k for k in got if k.endswith(('_lo', '_hi'))]
    arrays = {n: score_arrays(samples, n) for n in ('A', 'N')}
    boot = bootstrap_ood_metrics(
        {n: a['ID'] for n, a in arrays.items()},
        {s: {n: a[s] for n, a in arrays.items()}
         for s in ('near', 'far1', 'far2')},
        protocol='cma', num_resamples=200, seed=5)
    for name in ('A', 'N'):
        rows = dict(boot[name])
        rows['mean'] = {k: np.mean([rows[s][k] for s in ('near', 'far1',
                                                         'far2')], axis=0)
                        for k in KEYS}
        rows['far'] = {k: (rows['far1'][k] + rows['far2'][k]) / 2
                       for k in KEYS}
        for row, draws in rows.items():
            vals = report['scores'][name][row]
            for key in KEYS:
                lo, hi = np.percentile(draws[key], [5, 95])
                assert vals[f'{key}_lo'] == pytest.approx(lo, abs=1e-9)
                assert vals[f'{key}_hi'] == pytest.approx(hi, abs=1e-9)
                assert vals[key] == pytest.approx(got[f'ood/{name}/{row}/'
                                                      f'{key}'])
    (table, ) = logged
    near = report['scores']['A']['near']
    half = (near['AUROC_hi'] - near['AUROC_lo']) / 2
    assert f"{near['AUROC']:.2f} ± {half:.2f}" in table
    assert 'half-width of the 90% bootstrap interval (200 resamples)' in \
        ' '.join(table.split())
    assert half > 1  # 25 + 40 samples: several points wide


def test_bootstrap_zero_disables_the_intervals(monkeypatch):
    from cma_ood.evaluation import ood_metric
    logged = []
    monkeypatch.setattr(ood_metric, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    samples, _ = make_samples(seed=2)
    metric, _ = run(samples, bootstrap=0)
    assert 'bootstrap' not in metric.last_report
    assert set(metric.last_report['scores']['A']['near']) == set(KEYS)
    assert '±' not in logged[0]


@pytest.mark.parametrize('kwargs,match', [
    (dict(bootstrap=-1), 'bootstrap must be an integer >= 0'),
    (dict(bootstrap=2.5), 'bootstrap must be'),
    (dict(ci=95), r'ci must be a level in \(0, 1\)'),
    (dict(thumbnail_size=0), 'thumbnail_size must be an integer >= 1'),
    (dict(input_order='BGR'), "input_order must be 'bgr' or 'rgb'")])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OoDMetric(**kwargs)


# ---------------------------------------------------------------- seeds
def test_seed_variants_are_summarised_not_tabled(tmp_path, monkeypatch):
    from cma_ood.evaluation import ood_metric
    logged = []
    monkeypatch.setattr(ood_metric, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    samples, _ = make_samples(seed=3, seeds=(1, 2))
    for s in samples:  # a seed key without its main key: an ordinary score
        s['ood_scores']['X@seed=9'] = s['ood_scores']['A'] * 2
    metric, got = run(samples, out_dir=str(tmp_path), bootstrap=50,
                      save_plots=False)
    report = metric.last_report
    assert list(report['scores']) == ['A', 'N', 'X@seed=9']
    assert not [k for k in got if '@seed=1' in k or '@seed=2' in k]
    assert 'ood/X@seed=9/near/AUROC' in got
    assert list(report['seed_variant_scores']) == ['N@seed=1', 'N@seed=2']
    assert list(report['seed_variance']) == ['N']
    runs = [score_arrays(samples, k) for k in ('N', 'N@seed=1', 'N@seed=2')]
    per_seed = [{s: ood_metrics(a['ID'], a[s]) for s in ('near', 'far1',
                                                         'far2')}
                for a in runs]
    for key in KEYS:
        for s in ('near', 'far1', 'far2'):
            vals = [m[s][key] for m in per_seed]
            spread = report['seed_variance']['N'][s][key]
            assert spread['n'] == 3
            assert spread['mean'] == pytest.approx(np.mean(vals))
            assert spread['std'] == pytest.approx(np.std(vals, ddof=1))
            assert report['seed_variant_scores']['N@seed=2'][s][
                key] == pytest.approx(vals[2])
        means = [np.mean([m[s][key] for s in m]) for m in per_seed]
        far = [np.mean([m[s][key] for s in ('far1', 'far2')])
               for m in per_seed]
        assert report['seed_variance']['N']['mean'][key]['std'] == \
            pytest.approx(np.std(means, ddof=1))
        assert report['seed_variance']['N']['far'][key]['mean'] == \
            pytest.approx(np.mean(far))
    # the main key keeps its own figures and intervals; variants get none
    assert report['scores']['N']['near']['AUROC'] == pytest.approx(
        per_seed[0]['near']['AUROC'])
    assert 'AUROC_lo' in report['scores']['N']['near']
    assert 'AUROC_lo' not in report['seed_variant_scores']['N@seed=1'][
        'near']
    # one table line per score with seeds, no rows for the variants
    (table, ) = logged
    spread = report['seed_variance']['N']['mean']['FPR95']
    assert 'mean, 3 seeds (± sd)' in table
    assert f"{spread['mean']:.2f} ± {spread['std']:.2f}" in table
    assert 'N@seed=1' not in table
    # no plots for variants (plots are drawn from last_scores); their
    # scores are in the per-image table
    assert list(metric.last_scores) == ['A', 'N', 'X@seed=9']
    with open(tmp_path / 'ood_per_image.csv') as f:
        header = next(csv.reader(f))
    assert header[10:13] == ['A', 'N', 'N@seed=1']


def test_seed_variance_of_one_seed_has_zero_std():
    out = seed_variance([{'near': dict(FPR95=1.0, AUROC=2.0, AUPR_IN=3.0,
                                       AUPR_OUT=4.0)}])
    assert out['near']['AUROC'] == dict(mean=2.0, std=0.0, n=1)


# ---------------------------------------------------------------- per image
def test_per_image_csv_in_dataset_order(tmp_path):
    samples, images = make_samples(seed=4)
    metric = OoDMetric(out_dir=str(tmp_path), save_plots=False, bootstrap=0)
    metric.dataset_meta = META
    order = np.random.default_rng(0).permutation(len(samples))
    size = feed(metric, samples, images, order=order, pad=[3, 50])
    metric.evaluate(size)
    with open(tmp_path / 'ood_per_image.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(samples)  # padding repeats dropped
    assert list(rows[0]) == [
        'index', 'set', 'is_id', 'set_index', 'img_path', 'gt_label',
        'gt_class', 'pred_label', 'pred_class', 'pred_cos', 'A', 'N',
        'N_top_negatives']
    starts = dict(ID=0, near=40, far1=65, far2=95)
    for i, (row, s) in enumerate(zip(rows, samples)):
        assert int(row['index']) == i
        assert row['set'] == s['ood_source']
        assert row['is_id'] == ('1' if s['ood_source'] == 'ID' else '0')
        assert int(row['set_index']) == i - starts[s['ood_source']]
        assert row['img_path'] == s.get('img_path', '')
        gt, pred = int(s['gt_label']), int(s['pred_label'])
        assert row['gt_label'] == ('' if gt < 0 else str(gt))
        assert row['gt_class'] == ('' if gt < 0 else CLASSES[gt])
        assert row['pred_label'] == str(pred)
        assert row['pred_class'] == CLASSES[pred]
        assert float(row['pred_cos']) == s['pred_cos']  # full precision
        for name in ('A', 'N'):
            assert float(row[name]) == float(s['ood_scores'][name])
        assert row['N_top_negatives'] == '|'.join(
            s['ood_details']['N']['top_negatives'])


def test_per_image_false_writes_no_table(tmp_path):
    samples, _ = make_samples(seed=5, sizes=(('ID', 5), ('near', 4)))
    metric, _ = run(samples, out_dir=str(tmp_path), save_plots=False,
                    per_image=False, bootstrap=0)
    assert metric.last_per_image is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ood_results.json']


# ---------------------------------------------------------------- contact
def brute_force(samples, name, source, most, count=16):
    """The sheet's images by their definition: sort by score (descending
    for OoD, ascending for ID), ties by dataset index."""
    rows = [(float(s['ood_scores'][name]), s['ood_index']) for s in samples
            if s['ood_source'] == source]
    rows.sort(key=lambda r: ((-r[0] if most else r[0]), r[1]))
    return [i for _, i in rows[:count]]


def test_select_and_merge_extremes_agree_with_sorting():
    rng = np.random.default_rng(6)
    scores = np.round(rng.normal(0, 1, 200), 1)  # many ties
    index = rng.permutation(1000)[:200]
    for most in (True, False):
        want = sorted(zip(scores, index),
                      key=lambda r: (-r[0] if most else r[0], r[1]))[:16]
        got = select_extremes(scores, index, 16, most_id_like=most)
        assert [index[p] for p in got] == [i for _, i in want]
        running = []
        cuts = np.sort(rng.choice(200, 12, replace=False))
        for part in np.split(np.arange(200), cuts):
            cand = [(float(scores[p]), int(index[p])) for p in part]
            cand += [(float('nan'), -1)] + cand[:2]  # ignored
            running = merge_extremes(running, cand, 16, most)
        assert [i for _, i in running] == [i for _, i in want]
    assert len(select_extremes([1.0, 2.0], [0, 1], 16)) == 2


def test_contact_sheets_show_exactly_the_extremes(tmp_path):
    samples, images = make_samples(seed=7, sizes=(('ID', 40), ('near', 25),
                                                  ('far2', 9)))
    meta = dict(META, ood_sources=('ID', 'near', 'far2'), ood_groups={})
    metric = OoDMetric(out_dir=str(tmp_path), contact_sheets=True,
                       bootstrap=0, thumbnail_size=8)
    metric.dataset_meta = meta
    order = np.random.default_rng(1).permutation(len(samples))
    size = feed(metric, samples, images, order=order, pad=[0, 70])
    # only images in a running selection hold a thumbnail
    held = [r for r in metric.results if 'thumb' in r]
    selected = {i for sel in metric._extremes.values() for _, i in sel}
    assert {r['index'] for r in held} <= selected
    assert len(selected) < len(samples)
    metric.defer_outputs = True  # written below, for score N only
    metric.evaluate(size)
    sheets = metric.last_contact['sheets']
    assert list(sheets) == ['A', 'N']
    for name in ('A', 'N'):
        assert list(sheets[name]) == ['near', 'far2']
        for source in ('near', 'far2'):
            sheet = sheets[name][source]
            assert [t['index'] for t in sheet['ood']] == brute_force(
                samples, name, source, most=True)
            assert [t['index'] for t in sheet['id']] == brute_force(
                samples, name, 'ID', most=False)
        assert len(sheets[name]['far2']['ood']) == 9  # the whole set
        for item in sheets[name]['near']['ood'] + sheets[name]['near']['id']:
            s = samples[item['index']]
            assert item['score'] == float(s['ood_scores'][name])
            assert item['pred_class'] == CLASSES[int(s['pred_label'])]
            assert item['pred_cos'] == s['pred_cos']
            want = make_thumbnail(images[item['index']], 8, bgr=True)
            np.testing.assert_array_equal(item['thumb'], want)
        assert sheets['N']['near']['ood'][0]['negative'] == samples[
            sheets['N']['near']['ood'][0]['index']]['ood_details']['N'][
                'top_negatives'][0]
        assert sheets['A']['near']['ood'][0]['negative'] is None
    from cma_ood.evaluation.outputs import write_ood_outputs
    contact = dict(metric.last_contact, sheets=dict(N=sheets['N']))
    write_ood_outputs(metric.last_report, {}, str(tmp_path),  # no ROCs
                      save_plots=True, contact=contact)
    # a PNG per score and OoD set, of the documented size
    w, h = contact_sheet_pixels(16)
    assert 1000 < w < 1600 and 700 < h < 1100
    assert contact_sheet_size(16) == pytest.approx(
        (w / CONTACT_DPI, h / CONTACT_DPI), abs=0.01)
    for source in ('near', 'far2'):
        with Image.open(tmp_path / 'ood_plots' /
                        f'contact_N_{source}.png') as img:
            assert img.size == (w, h)
    # (score A's sheets were left out to save time)
    assert not (tmp_path / 'ood_plots' / 'contact_A_near.png').exists()


def test_contact_selection_merges_across_ranks():
    """Two ranks keep their own running selections; the gathered results
    (interleaved as mmengine's collect_results does) give the global one,
    with a thumbnail for every image shown."""
    samples, images = make_samples(seed=8, sizes=(('ID', 31), ('near', 20)))
    meta = dict(META, ood_sources=('ID', 'near'), ood_groups={})
    ranks = []
    for rank in range(2):
        m = OoDMetric(contact_sheets=True, bootstrap=0, per_image=False)
        m.dataset_meta = meta
        mine = list(range(rank, len(samples), 2)) + ([0] if rank else [])
        feed(m, samples, images, order=mine, batch=5)
        ranks.append(m)
    gathered = [r for pair in zip(*(m.results for m in ranks)) for r in pair]
    main = ranks[0]
    main.compute_metrics(gathered)
    sheet = main.last_contact['sheets']['A']['near']
    assert [t['index'] for t in sheet['ood']] == brute_force(
        samples, 'A', 'near', most=True)
    assert [t['index'] for t in sheet['id']] == brute_force(
        samples, 'A', 'ID', most=False)
    assert all(t['thumb'] is not None for t in sheet['ood'] + sheet['id'])


def test_thumbnails_from_every_kind_of_batch():
    import cv2

    from cma_ood.datasets.collate import pack_encoded
    bgr = np.zeros((3, 40, 20), np.uint8)
    bgr[0], bgr[2] = 200, 10  # blue
    thumb = make_thumbnail(torch.from_numpy(bgr), size=10, bgr=True)
    assert thumb.shape == (10, 5, 3)
    assert tuple(thumb[3, 2]) == (10, 0, 200)  # RGB
    assert tuple(make_thumbnail(bgr, 96, bgr=False)[0, 0]) == (200, 0, 10)
    assert make_thumbnail(bgr, 96).shape == (40, 20, 3)  # never enlarged
    grey = make_thumbnail(np.full((1, 4, 4), 300.7), 96)
    assert grey.dtype == np.uint8 and (grey == 255).all()
    # a stacked batch, a list batch and a DecodeOnDevice (encoded) batch
    imgs = [torch.full((3, 6, 6), v, dtype=torch.uint8) for v in (1, 2, 3)]
    assert int(_batch_image({'inputs': torch.stack(imgs)}, 2)[0, 0, 0]) == 3
    assert int(_batch_image({'inputs': imgs}, 1)[0, 0, 0]) == 2
    assert _batch_image({}, 0) is None and _batch_image(None, 0) is None
    ok, jpeg = cv2.imencode('.jpg', np.full((8, 12, 3), 128, np.uint8))
    encoded = dict(pack_encoded([dict(data=jpeg.ravel(),
                                      plan=np.zeros(12, np.int64))]),
                   positions=torch.tensor([1]))
    batch = {'inputs': torch.stack(imgs[:2]), 'encoded': encoded}
    decoded = _batch_image(batch, 1)
    assert decoded.shape == (8, 12, 3)
    assert abs(int(decoded[4, 6, 0]) - 128) <= 2
    assert int(_batch_image(batch, 2)[0, 0, 0]) == 2  # after the encoded


def test_format_score():
    assert format_score(0.99996) == '1-4.0e-05'
    assert format_score(1.0) == '1'
    assert format_score(12.34567) == '12.35'
    assert format_score(3e-14) == '3e-14'
    assert math.isclose(float(format_score(0.5)), 0.5)
