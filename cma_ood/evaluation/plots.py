"""Figures of an OoD evaluation (functional core plus one saving shell).

- :func:`ood_pair_figure`: one score on one ID/OoD pair, ROC curve with
  AUROC/FPR95 and histograms of the two score sets.
- :func:`ood_summary_figure`: every score x every OoD set of a run as a
  grid of small ROC curves.
- :func:`save_figure`: PNG at :data:`PNG_DPI` plus a vector PDF beside it.

Scores are *higher = more in-distribution* everywhere. The figure builders
return a :class:`matplotlib.figure.Figure` on matplotlib's Agg canvas
without touching pyplot's global state, so they can be inspected in tests
or notebooks and are safe in worker processes.

Histogram scale (:func:`choose_score_transform`): some scores crowd at the
ends of their range (NegLabel's OoD scores sit near 1e-14 and its ID scores
near 1), so a linear histogram shows two spikes. The histogram is then drawn
on a monotone increasing transform of the score, named on the x axis. The
ROC curve never depends on such a transform.
"""
import os
import os.path as osp
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

#: PNG resolution (dots per inch); the PDF beside each PNG is vector.
PNG_DPI = 200

#: Histogram transforms, in the order :func:`choose_score_transform` prefers
#: them on ties. Each is monotone increasing on its domain:
#: ``identity`` (any score), ``log10`` (scores > 0), ``neglog10_1m`` =
#: ``-log10(1 - s)`` (scores < 1) and ``logit`` = ``ln(s / (1 - s))``
#: (0 < scores < 1).
TRANSFORMS = ('identity', 'log10', 'neglog10_1m', 'logit')

#: Below this spread (see :func:`score_spread`) a linear axis is unreadable.
SPREAD_THRESHOLD = 0.05
#: A transform replaces the linear axis only if it spreads at least this
#: many times more.
SPREAD_GAIN = 4.0

_HIST_BINS = 50


# ------------------------------------------------------------ transforms
def transform_domain_ok(name: str, scores: np.ndarray) -> bool:
    """Whether every value of ``scores`` (any shape) is in the domain of
    transform ``name`` (one of :data:`TRANSFORMS`)."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    return {
        'identity': True,
        'log10': lo > 0,
        'neglog10_1m': hi < 1,
        'logit': lo > 0 and hi < 1,
    }[name]


def apply_transform(name: str, scores: np.ndarray) -> np.ndarray:
    """Transform ``scores`` (any shape, float64, inside the domain of
    ``name``, see :func:`transform_domain_ok`); same shape out."""
    x = np.asarray(scores, dtype=np.float64)
    if name == 'identity':
        return x
    if name == 'log10':
        return np.log10(x)
    if name == 'neglog10_1m':
        return -np.log10(1.0 - x)
    if name == 'logit':
        return np.log(x) - np.log1p(-x)
    raise ValueError(f'unknown score transform {name!r}; expected one of '
                     + ', '.join(map(repr, TRANSFORMS)))


def transform_label(name: str, score_name: str = 'score') -> str:
    """x-axis label naming the transform ``name`` of score ``score_name``."""
    inner = {
        'identity': score_name,
        'log10': f'log10({score_name})',
        'neglog10_1m': f'-log10(1 - {score_name})',
        'logit': f'logit({score_name}) = ln(s / (1 - s))',
    }[name]
    return f'{inner}  (higher = ID)'


def score_spread(groups: Sequence[np.ndarray], name: str) -> float:
    """How readable a histogram of ``groups`` is on transform ``name``.

    For every group (e.g. the ID and the OoD scores, each 1-D float64) whose
    5% and 95% quantiles differ, the width of that central 90% interval
    after the transform, divided by the transformed range of all groups
    pooled: the fraction of the x axis the bulk of the group covers. The
    spread is the geometric mean of these fractions (0 if no group has a
    positive width or the pooled range is 0), so a transform must not
    squash one group to spread the other. A group of constant (or almost
    all equal) scores is left out, since no transform can spread it.

    Quantiles use ``method='inverted_cdf'`` (actual data points), so they
    commute exactly with the monotone transforms.
    """
    pooled = apply_transform(name, np.concatenate(groups))
    total = float(pooled.max() - pooled.min())
    if not np.isfinite(total) or total <= 0:
        return 0.0
    widths = []
    for g in groups:
        q05, q95 = np.quantile(g, [0.05, 0.95], method='inverted_cdf')
        if q95 > q05:
            t05, t95 = apply_transform(name, np.array([q05, q95]))
            widths.append(float(t95 - t05) / total)
    if not widths or min(widths) <= 0:
        return 0.0
    return float(np.exp(np.mean(np.log(widths))))


def choose_score_transform(id_scores: np.ndarray,
                           ood_scores: np.ndarray) -> str:
    """Pick the histogram scale of an ID/OoD score pair (pure function).

    Rule: keep ``'identity'`` unless its :func:`score_spread` is below
    :data:`SPREAD_THRESHOLD` (the central 90% of the ID and of the OoD
    scores cover, in geometric mean, under 1/20 of the axis, about 2.5 of
    the 50 bins) *and* the best
    transform of :data:`TRANSFORMS` whose domain holds every score spreads
    them at least :data:`SPREAD_GAIN` times more; then return that best one
    (earliest in :data:`TRANSFORMS` on ties).

    E.g. NegLabel (OoD ~1e-14, ID ~1 - 1e-4, all strictly inside (0, 1)):
    ``'logit'``; the same with some ID scores exactly 1.0: ``'log10'``;
    Gaussian or energy-like scores: ``'identity'``.

    Args:
        id_scores: (n_id,) finite scores of the ID set.
        ood_scores: (n_ood,) finite scores of one OoD set.

    Returns:
        one of :data:`TRANSFORMS`.
    """
    groups = [np.asarray(id_scores, np.float64).ravel(),
              np.asarray(ood_scores, np.float64).ravel()]
    pooled = np.concatenate(groups)
    base = score_spread(groups, 'identity')
    if base >= SPREAD_THRESHOLD:
        return 'identity'
    best, best_spread = 'identity', base
    for name in TRANSFORMS[1:]:
        if transform_domain_ok(name, pooled):
            spread = score_spread(groups, name)
            if spread > best_spread:
                best, best_spread = name, spread
    if best_spread > 0 and best_spread >= SPREAD_GAIN * base:
        return best
    return 'identity'


# ------------------------------------------------------------ ROC
def is_ood_positive(protocol: str) -> bool:
    """Whether metric ``protocol`` takes OoD as the positive class (only
    ``'openood'``, see :func:`cma_ood.evaluation.ood_metrics`), which sets
    the orientation of the ROC curve drawn for it."""
    return protocol == 'openood'


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray,
               ood_positive: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """sklearn ROC curve ``(fpr, tpr)`` of an ID/OoD split.

    ``ood_positive=False``: ID positive on the score (TPR = ID accepted,
    FPR = OoD accepted). ``True``: OoD positive on the negated score, as
    the ``'openood'`` protocol (TPR = OoD flagged, FPR = ID flagged).
    """
    from sklearn.metrics import roc_curve
    is_id = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    scores = np.r_[id_scores, ood_scores]
    if ood_positive:
        fpr, tpr, _ = roc_curve(1 - is_id, -scores)
    else:
        fpr, tpr, _ = roc_curve(is_id, scores)
    return fpr, tpr


def roc_annotation(metrics: Mapping[str, float], protocol: str) -> str:
    """Text printed on a ROC plot: the protocol, AUROC and FPR95 (percent,
    two decimals, as in the logged table), from ``metrics`` (a dict of
    :func:`cma_ood.evaluation.ood_metrics`)."""
    return (f"'{protocol}' metrics\n"
            f"AUROC = {metrics['AUROC']:.2f}%\n"
            f"FPR95 = {metrics['FPR95']:.2f}%")


def _roc_axis_labels(ood_positive: bool) -> Tuple[str, str]:
    if ood_positive:
        return ('FPR (fraction of ID flagged as OoD)',
                'TPR (fraction of OoD flagged)')
    return ('FPR (fraction of OoD accepted as ID)',
            'TPR (fraction of ID accepted)')


def _draw_roc(ax, id_scores, ood_scores, metrics, protocol, ood_positive,
              small=False) -> None:
    fpr, tpr = roc_points(id_scores, ood_scores, ood_positive)
    fs = 6 if small else 8
    ax.plot(fpr, tpr, color='C0', linewidth=1.2, label='ROC')
    ax.plot([0, 1], [0, 1], '--', color='grey', linewidth=0.8,
            label='chance (AUROC 50%)')
    ax.axhline(0.95, color='red', linewidth=0.8, linestyle=':',
               label='TPR = 95%')
    ax.plot([metrics['FPR95'] / 100.0], [0.95], 'o', color='red',
            markersize=3 if small else 4, label='FPR95 point')
    ax.text(0.97, 0.05, roc_annotation(metrics, protocol),
            transform=ax.transAxes, ha='right', va='bottom', fontsize=fs,
            bbox=dict(boxstyle='round', facecolor='white', alpha=0.85,
                      edgecolor='0.7'))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    if small:
        ax.tick_params(labelsize=fs)
    else:
        xlabel, ylabel = _roc_axis_labels(ood_positive)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.legend(loc='center right', fontsize=fs, framealpha=0.85)


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


# ------------------------------------------------------------ figures
def ood_pair_figure(id_scores: np.ndarray,
                    ood_scores: np.ndarray,
                    metrics: Mapping[str, float],
                    protocol: str = 'mos',
                    ood_positive: bool = False,
                    score_name: str = 'score',
                    id_name: str = 'ID',
                    ood_name: str = 'OoD',
                    title: str = ''):
    """Two panels for one score on one ID/OoD pair (pure: no file IO).

    Left, the ROC curve (orientation per ``ood_positive``, see
    :func:`roc_points`; both axes labelled) with the chance diagonal, the
    TPR = 95% line, the FPR95 point and :func:`roc_annotation` of
    ``metrics``. Right, density histograms of the ID and OoD scores (each
    integrates to 1; 50 shared bins) on the scale of
    :func:`choose_score_transform`, named on the x axis.

    Args:
        id_scores: (n_id,) finite float scores, higher = ID.
        ood_scores: (n_ood,) finite float scores.
        metrics: ``ood_metrics`` of this pair (percent), at least ``AUROC``
            and ``FPR95``.
        protocol: the metric protocol name, printed with the metrics.
        ood_positive: True for protocols with OoD as the positive class.
        score_name, id_name, ood_name: names for labels and legend.
        title: figure title.

    Returns:
        matplotlib Figure (Agg canvas), 9 x 3.6 inches.
    """
    id_scores = np.asarray(id_scores, np.float64)
    ood_scores = np.asarray(ood_scores, np.float64)
    fig = _new_figure((9, 3.6))
    ax_roc, ax_hist = fig.subplots(1, 2)
    _draw_roc(ax_roc, id_scores, ood_scores, metrics, protocol, ood_positive)
    ax_roc.set_title('ROC', fontsize=10)

    transform = choose_score_transform(id_scores, ood_scores)
    t_id = apply_transform(transform, id_scores)
    t_ood = apply_transform(transform, ood_scores)
    lo = float(min(t_id.min(), t_ood.min()))
    hi = float(max(t_id.max(), t_ood.max()))
    bins = np.linspace(lo, hi, _HIST_BINS + 1) if hi > lo else np.linspace(
        lo - 0.5, lo + 0.5, _HIST_BINS + 1)
    ax_hist.hist(t_id, bins=bins, alpha=0.6, density=True,
                 label=f'{id_name} (n={id_scores.size})')
    ax_hist.hist(t_ood, bins=bins, alpha=0.6, density=True,
                 label=f'{ood_name} (n={ood_scores.size})')
    ax_hist.set(xlabel=transform_label(transform, score_name),
                ylabel='density (each histogram integrates to 1)')
    ax_hist.set_title('Scores', fontsize=10)
    ax_hist.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ood_summary_figure(panels: Mapping[str, Mapping[str, tuple]],
                       protocol: str = 'mos',
                       ood_positive: bool = False,
                       id_name: str = 'ID'):
    """Grid of small ROC curves: one row per score, one column per OoD set.

    Args:
        panels: ``{score: {ood set: (id_scores, ood_scores, metrics)}}``
            (arrays as in :func:`ood_pair_figure`, ``metrics`` with
            ``AUROC`` and ``FPR95`` in percent). Columns are the union of
            the sets in first-seen order; a (score, set) without data gets
            an empty, hidden cell.
        protocol, ood_positive: as in :func:`ood_pair_figure`.
        id_name: the ID set's name, for the title.

    Returns:
        matplotlib Figure (Agg canvas) whose visible axes are the
        (score, set) panels in row-major order, each titled
        ``'{score} | {set}'``.
    """
    scores = list(panels)
    sets = []
    for by_set in panels.values():
        sets.extend(s for s in by_set if s not in sets)
    nrows, ncols = max(len(scores), 1), max(len(sets), 1)
    fig = _new_figure((2.3 * ncols + 0.7, 2.3 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, score in enumerate(scores):
        for j, ood_set in enumerate(sets):
            ax = axes[i][j]
            if ood_set not in panels[score]:
                ax.set_visible(False)
                continue
            id_s, ood_s, metrics = panels[score][ood_set]
            _draw_roc(ax, np.asarray(id_s, np.float64),
                      np.asarray(ood_s, np.float64), metrics, protocol,
                      ood_positive, small=True)
            ax.set_title(f'{score} | {ood_set}', fontsize=7)
    xlabel, ylabel = _roc_axis_labels(ood_positive)
    fig.supxlabel(xlabel, fontsize=8)
    fig.supylabel(ylabel, fontsize=8)
    fig.suptitle(f"ROC of every score and OoD set vs {id_name} "
                 f"('{protocol}' metrics; dotted: TPR = 95%, "
                 f"dashed: chance)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------ IO shell
def save_figure(fig, png_path: str, dpi: int = PNG_DPI) -> Tuple[str, str]:
    """Write ``fig`` to ``png_path`` at ``dpi`` and as a vector PDF with the
    same stem beside it; create the folder. Returns ``(png, pdf)``."""
    os.makedirs(osp.dirname(png_path) or '.', exist_ok=True)
    pdf_path = osp.splitext(png_path)[0] + '.pdf'
    fig.savefig(png_path, dpi=dpi)
    fig.savefig(pdf_path)
    return png_path, pdf_path


def save_ood_plot(id_scores: np.ndarray,
                  ood_scores: np.ndarray,
                  path: str,
                  title: str = '',
                  metrics: Optional[Dict[str, float]] = None,
                  protocol: str = 'mos',
                  ood_positive: Optional[bool] = None,
                  score_name: str = 'score',
                  id_name: str = 'ID',
                  ood_name: str = 'OoD') -> Tuple[str, str]:
    """:func:`ood_pair_figure` saved by :func:`save_figure` to ``path``
    (PNG) and the PDF beside it; returns ``(png, pdf)``.

    ``metrics`` default to ``ood_metrics(id_scores, ood_scores,
    protocol=protocol)``; ``ood_positive`` defaults to
    :func:`is_ood_positive` of ``protocol``.
    """
    if metrics is None:
        from .functional import ood_metrics
        metrics = ood_metrics(id_scores, ood_scores, protocol=protocol)
    if ood_positive is None:
        ood_positive = is_ood_positive(protocol)
    fig = ood_pair_figure(id_scores, ood_scores, metrics, protocol=protocol,
                          ood_positive=ood_positive, score_name=score_name,
                          id_name=id_name, ood_name=ood_name, title=title)
    return save_figure(fig, path)
