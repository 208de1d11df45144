"""ROC curve and score histogram of one ID/OoD pair, as a PNG."""
import os
import os.path as osp

import numpy as np


def save_ood_plot(id_scores: np.ndarray, ood_scores: np.ndarray, path: str,
                  title: str = '') -> None:
    """Write a two-panel PNG: ROC curve (ID positive) and histograms of the
    ID and OoD scores. Uses matplotlib's Agg canvas (no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    fpr, tpr, _ = roc_curve(labels, np.r_[id_scores, ood_scores])
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax_roc, ax_hist = fig.subplots(1, 2)
    ax_roc.plot(fpr, tpr)
    ax_roc.plot([0, 1], [0, 1], '--', color='grey', linewidth=0.8)
    ax_roc.axhline(0.95, color='red', linewidth=0.8, linestyle=':')
    ax_roc.set(xlabel='FPR (OoD accepted)', ylabel='TPR (ID accepted)',
               title='ROC', xlim=(0, 1), ylim=(0, 1.01))
    lo = min(id_scores.min(), ood_scores.min())
    hi = max(id_scores.max(), ood_scores.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    ax_hist.hist(id_scores, bins=bins, alpha=0.6, density=True, label='ID')
    ax_hist.hist(ood_scores, bins=bins, alpha=0.6, density=True, label='OoD')
    ax_hist.set(xlabel='score (higher = ID)', title='Scores')
    ax_hist.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=80)
