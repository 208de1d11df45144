"""OoD report files: figures (dpi, PDF, annotations, histogram scale,
summary grid), the writer and its log line."""
import numpy as np
import pytest
from PIL import Image

import cma_ood  # noqa: F401
from cma_ood.evaluation import ood_metrics
from cma_ood.evaluation import outputs
from cma_ood.evaluation.plots import (PNG_DPI, TRANSFORMS, apply_transform,
                                      choose_score_transform,
                                      ood_pair_figure, ood_summary_figure,
                                      roc_annotation, roc_points,
                                      save_ood_plot, transform_domain_ok)


def neglabel_like(seed=0, n_id=400, n_ood=300):
    """NegLabel-shaped scores: OoD near 1e-14, ID within 1e-6..1e-2 of 1."""
    rng = np.random.default_rng(seed)
    ood = 10.0**rng.uniform(-15, -13, n_ood)
    ind = 1.0 - 10.0**rng.uniform(-6, -2, n_id)
    return ind, ood


def gaussian_pair(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)


# ------------------------------------------------------------ file formats
def test_png_at_print_resolution_and_pdf_beside_it(tmp_path):
    ind, ood = gaussian_pair()
    png, pdf = save_ood_plot(ind, ood, str(tmp_path / 'sub' / 'A_x.png'),
                             title='A: ID vs x')
    assert png == str(tmp_path / 'sub' / 'A_x.png')
    assert pdf == str(tmp_path / 'sub' / 'A_x.pdf')
    assert PNG_DPI >= 150
    with Image.open(png) as img:
        # the 9 x 3.6 inch figure at PNG_DPI, and the dpi in the metadata
        assert img.size == (9 * PNG_DPI, round(3.6 * PNG_DPI))
        assert img.info['dpi'] == pytest.approx((PNG_DPI, PNG_DPI), abs=0.01)
    with open(pdf, 'rb') as f:
        assert f.read(5) == b'%PDF-'


# ------------------------------------------------------------ transforms
def test_transform_chooser_on_neglabel_scores():
    ind, ood = neglabel_like()
    # strictly inside (0, 1): the logit spreads both ends
    assert choose_score_transform(ind, ood) == 'logit'
    # some ID scores saturate at exactly 1.0 (float32 softmax): log10,
    # which needs only scores > 0, spreads the OoD end
    sat = ind.copy()
    sat[::10] = 1.0
    assert choose_score_transform(sat, ood) == 'log10'
    # OoD exactly 0 too: no transform's domain holds 0 and 1
    assert choose_score_transform(sat, np.r_[ood, 0.0]) == 'identity'


def test_transform_chooser_keeps_ordinary_scores_linear():
    rng = np.random.default_rng(1)
    cases = [
        gaussian_pair(),                                     # logit-like
        (rng.uniform(0.3, 0.9, 200), rng.uniform(0.1, 0.5, 200)),  # (0, 1)
        (rng.normal(25, 2, 200), rng.normal(20, 2, 200)),  # energy-like
        # 1000-class MCM at T = 1: all near 1e-3, but not crowded
        (1e-3 + rng.gamma(2, 1e-6, 200), 1e-3 + rng.gamma(1, 1e-6, 200)),
        # far apart but each spread: log10 would gain only ~2x
        (rng.normal(1000, 1, 200), rng.normal(10, 0.1, 200)),
        (np.full(10, 1.0), np.full(10, 1e-14)),  # constant: nothing to gain
    ]
    for ind, ood in cases:
        assert choose_score_transform(ind, ood) == 'identity'


def test_transforms_are_increasing_on_their_domain():
    x = np.array([1e-15, 1e-6, 0.3, 0.5, 0.9, 1 - 1e-9])
    for name in TRANSFORMS:
        assert transform_domain_ok(name, x)
        assert np.all(np.diff(apply_transform(name, x)) > 0), name
    np.testing.assert_allclose(apply_transform('logit', np.array([0.5, 0.9])),
                               [0.0, np.log(9.0)])
    np.testing.assert_allclose(
        apply_transform('neglog10_1m', np.array([0.9, 0.999])), [1.0, 3.0])
    assert not transform_domain_ok('log10', np.array([0.0, 0.5]))
    assert not transform_domain_ok('neglog10_1m', np.array([0.5, 1.0]))
    assert not transform_domain_ok('logit', np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="unknown score transform 'ln'"):
        apply_transform('ln', x)


def test_histogram_axes_name_the_transform_and_density():
    ind, ood = neglabel_like()
    fig = ood_pair_figure(ind, ood, ood_metrics(ind, ood),
                          score_name='NegLabel')
    ax_hist = fig.axes[1]
    assert ax_hist.get_xlabel() == (
        'logit(NegLabel) = ln(s / (1 - s))  (higher = ID)')
    assert ax_hist.get_ylabel() == 'density (each histogram integrates to 1)'
    # the bars span the logit range: log(1e-15) ~ -34.5 .. log(1e6) ~ 13.8
    lo, hi = ax_hist.get_xlim()
    assert lo < -30 and hi > 9
    ind, ood = gaussian_pair()
    fig = ood_pair_figure(ind, ood, ood_metrics(ind, ood), score_name='A')
    assert fig.axes[1].get_xlabel() == 'A  (higher = ID)'


# ------------------------------------------------------------ ROC
def _texts(ax):
    return [t.get_text() for t in ax.texts]


@pytest.mark.parametrize('protocol', ['mos', 'cma', 'openood'])
def test_roc_panel_prints_the_metrics_and_labels_its_lines(protocol):
    ind, ood = gaussian_pair(seed=2)
    metrics = ood_metrics(ind, ood, protocol=protocol)
    fig = ood_pair_figure(ind, ood, metrics, protocol=protocol,
                          ood_positive=protocol == 'openood')
    ax_roc = fig.axes[0]
    (text, ) = _texts(ax_roc)
    assert text == roc_annotation(metrics, protocol)
    assert f"'{protocol}' metrics" in text
    assert f"AUROC = {metrics['AUROC']:.2f}%" in text
    assert f"FPR95 = {metrics['FPR95']:.2f}%" in text
    legend = [t.get_text() for t in ax_roc.get_legend().get_texts()]
    assert legend == ['ROC', 'chance (AUROC 50%)', 'TPR = 95%',
                      'FPR95 point']
    if protocol == 'openood':
        assert ax_roc.get_xlabel() == 'FPR (fraction of ID flagged as OoD)'
        assert ax_roc.get_ylabel() == 'TPR (fraction of OoD flagged)'
    else:
        assert ax_roc.get_xlabel() == 'FPR (fraction of OoD accepted as ID)'
        assert ax_roc.get_ylabel() == 'TPR (fraction of ID accepted)'
    # the TPR = 95% line and the FPR95 point sit where the metric says
    lines = {line.get_label(): line for line in ax_roc.get_lines()}
    assert list(lines['TPR = 95%'].get_ydata()) == [0.95, 0.95]
    np.testing.assert_allclose(lines['FPR95 point'].get_xydata(),
                               [[metrics['FPR95'] / 100, 0.95]])


def test_roc_curve_orientation_matches_each_protocol_fpr95():
    ind, ood = gaussian_pair(seed=3)
    fpr, tpr = roc_points(ind, ood)
    assert np.interp(0.95, tpr, fpr) * 100 == pytest.approx(
        ood_metrics(ind, ood, protocol='cma')['FPR95'], abs=1e-9)
    fpr, tpr = roc_points(ind, ood, ood_positive=True)
    assert fpr[np.argmax(tpr >= 0.95)] * 100 == pytest.approx(
        ood_metrics(ind, ood, protocol='openood')['FPR95'], abs=1e-9)


def test_roc_annotation_format():
    assert roc_annotation(dict(AUROC=91.234, FPR95=7.005), 'mos') == (
        "'mos' metrics\nAUROC = 91.23%\nFPR95 = 7.00%")


# ------------------------------------------------------------ summary
def test_summary_figure_has_one_panel_per_score_and_set():
    ind, ood = gaussian_pair(seed=4)
    m = ood_metrics(ind, ood)
    panels = dict(A=dict(near=(ind, ood, m), far=(ind, ood - 1, m)),
                  B=dict(near=(ind, ood, m), far=(ind, ood, m),
                         other=(ind, ood, m)))
    fig = ood_summary_figure(panels, protocol='cma')
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [
        'A | near', 'A | far', 'B | near', 'B | far', 'B | other']
    assert len(fig.axes) == 6  # 2 x 3 grid, (A, other) hidden
    for ax in visible:
        assert _texts(ax) == [roc_annotation(m, 'cma')]
    assert "'cma' metrics" in fig._suptitle.get_text()


# ------------------------------------------------------------ writer
def _report_and_scores():
    rng = np.random.default_rng(5)
    ind, ood = neglabel_like(seed=5)
    scores = dict(NegLabel={'ID': ind, 'in/at': ood},
                  MCM={'ID': rng.normal(1, 1, 50), 'in/at': rng.normal(0, 1,
                                                                     40)})
    report = dict(id_source='ID', metric_protocol='mos', scores={},
                  num_samples={'ID': 50, 'in/at': 40})
    for name, by in scores.items():
        m = ood_metrics(by['ID'], by['in/at'])
        report['scores'][name] = {'in/at': m, 'mean': m}
    return report, scores


def test_writer_files_and_log_line(tmp_path, monkeypatch):
    import json
    logged = []
    monkeypatch.setattr(outputs, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    report, scores = _report_and_scores()
    out = outputs.write_ood_outputs(report, scores, str(tmp_path))
    plot_dir = str(tmp_path / 'ood_plots')
    assert out['json'] == str(tmp_path / 'ood_results.json')
    assert out['plot_dir'] == plot_dir
    stems = ['NegLabel_in_at', 'MCM_in_at', 'summary']
    assert out['plots'] == [f'{plot_dir}/{s}.{ext}' for s in stems
                            for ext in ('png', 'pdf')]
    for path in out['plots']:
        with open(path, 'rb') as f:
            head = f.read(5)
        assert head == (b'%PDF-' if path.endswith('.pdf') else b'\x89PNG\r')
    with open(out['json']) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    assert logged == [f"OoD results: {tmp_path}/ood_results.json; plots "
                      f"(PNG {PNG_DPI} dpi + PDF): {plot_dir}"]
    with Image.open(f'{plot_dir}/summary.png') as img:  # 2 x 1 panels
        assert img.size == (round(3.0 * PNG_DPI), round(5.5 * PNG_DPI))


def test_writer_without_plots(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(outputs, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    report, scores = _report_and_scores()
    out = outputs.write_ood_outputs(report, scores, str(tmp_path),
                                    save_plots=False)
    assert out == dict(json=str(tmp_path / 'ood_results.json'),
                       plot_dir=None, plots=[])
    assert not (tmp_path / 'ood_plots').exists()
    assert logged == [f'OoD results: {tmp_path}/ood_results.json; plots: '
                      'none (save_plots=False)']

