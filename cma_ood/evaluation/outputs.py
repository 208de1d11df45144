"""Files of an OoD evaluation (the IO shell around the metric's results).

``write_ood_outputs`` writes, into an output folder (a run's log dir):

- ``ood_results.json``: the report of :class:`OoDMetric` (figures,
  sample counts, ``metric_protocol``, and ``provenance`` when
  :class:`~cma_ood.engine.hooks.OoDOutputHook` adds it);
- ``ood_plots/{score}_{set}.png`` and ``.pdf``: ROC + histogram of each
  score on each OoD set (:func:`~cma_ood.evaluation.plots.ood_pair_figure`);
- ``ood_plots/summary.png`` and ``.pdf``: every score x every OoD set
  (:func:`~cma_ood.evaluation.plots.ood_summary_figure`);
- ``ood_per_image.csv`` (given ``per_image``): a row per image
  (:mod:`~cma_ood.evaluation.per_image`);
- ``ood_plots/contact_{score}_{set}.png`` (given ``contact`` and with the
  plots): the images each score gets most wrong
  (:func:`~cma_ood.evaluation.contact_sheet.contact_sheet_figure`);

and logs one line naming the JSON file and the plot folder (and a second
one for the per-image table and the contact sheets, when written).
"""
import json
import os.path as osp
from typing import Dict, List, Mapping, Optional

import numpy as np
from mmengine.logging import print_log

from ..utils.checkpoint import atomic_write_text
from .contact_sheet import contact_sheet_figure, save_contact_sheet
from .per_image import PER_IMAGE_FILE, per_image_csv_text
from .plots import (PNG_DPI, is_ood_positive, ood_pair_figure,
                    ood_summary_figure, save_figure)

RESULTS_FILE = 'ood_results.json'
PLOT_DIR = 'ood_plots'
#: Stem of the run's summary figure inside :data:`PLOT_DIR`. Per-pair
#: plots are ``{score}_{set}``, so they never take this name.
SUMMARY_STEM = 'summary'


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.``
    replaced by ``_`` (for file names)."""
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)


def pair_plot_path(out_dir: str, score: str, ood_set: str) -> str:
    """PNG path of the plot of ``score`` on ``ood_set`` (PDF: same stem)."""
    return osp.join(out_dir, PLOT_DIR,
                    f'{safe_name(score)}_{safe_name(ood_set)}.png')


def contact_sheet_path(out_dir: str, score: str, ood_set: str) -> str:
    """PNG path of the contact sheet of ``score`` on ``ood_set``."""
    return osp.join(out_dir, PLOT_DIR,
                    f'contact_{safe_name(score)}_{safe_name(ood_set)}.png')


def summary_plot_path(out_dir: str) -> str:
    """PNG path of the run's summary figure (PDF: same stem)."""
    return osp.join(out_dir, PLOT_DIR, f'{SUMMARY_STEM}.png')


def outputs_log_line(json_path: str, plot_dir: Optional[str]) -> str:
    """The line logged after writing: where the JSON and the plots went."""
    if plot_dir is None:
        return f'OoD results: {json_path}; plots: none (save_plots=False)'
    return (f'OoD results: {json_path}; plots (PNG {PNG_DPI} dpi + PDF): '
            f'{plot_dir}')


def write_ood_outputs(report: Mapping,
                      scores: Mapping[str, Mapping[str, np.ndarray]],
                      out_dir: str,
                      save_plots: bool = True,
                      per_image: Optional[tuple] = None,
                      contact: Optional[Mapping] = None) -> Dict[str, object]:
    """Write the JSON report and (optionally) the plots of one evaluation.

    Args:
        report: the JSON content, as :attr:`OoDMetric.last_report`: at
            least ``id_source``, ``metric_protocol`` and ``scores``
            (``{score: {set or summary: {metric: percent}}}``).
        scores: ``{score: {dataset: (n,) float64 scores}}`` of the ID set
            and every OoD set, as :attr:`OoDMetric.last_scores`. A plot is
            drawn for each (score, OoD set) in both ``scores`` and
            ``report['scores']``.
        out_dir: output folder (created).
        save_plots: write the plots; the JSON is always written.
        per_image: ``(header, rows)`` of the per-image table
            (:attr:`OoDMetric.last_per_image`), written to
            ``ood_per_image.csv``; None: no table.
        contact: :attr:`OoDMetric.last_contact`; a contact sheet is drawn
            per score and OoD set in it (with ``save_plots``).

    Returns:
        ``dict(json=path, plot_dir=path or None, plots=[PNG and PDF paths
        in writing order])``, plus ``per_image`` (the CSV path) and
        ``contact_sheets`` (PNG paths) where those were written.
    """
    id_source = report['id_source']
    protocol = report.get('metric_protocol', 'mos')
    ood_positive = is_ood_positive(protocol)
    json_path = osp.join(out_dir, RESULTS_FILE)
    atomic_write_text(json_path, json.dumps(report, indent=2) + '\n')
    written: List[str] = []
    plot_dir = None
    if save_plots:
        plot_dir = osp.join(out_dir, PLOT_DIR)
        panels = {}
        for name, by_source in scores.items():
            summary = report['scores'].get(name, {})
            for source, arr in by_source.items():
                if source == id_source or source not in summary:
                    continue
                id_arr = by_source[id_source]
                metrics = summary[source]
                fig = ood_pair_figure(
                    id_arr, arr, metrics, protocol=protocol,
                    ood_positive=ood_positive, score_name=name,
                    id_name=id_source, ood_name=source,
                    title=f'{name}: {id_source} vs {source}')
                written.extend(save_figure(
                    fig, pair_plot_path(out_dir, name, source)))
                panels.setdefault(name, {})[source] = (id_arr, arr, metrics)
        if panels:
            fig = ood_summary_figure(panels, protocol=protocol,
                                     ood_positive=ood_positive,
                                     id_name=id_source)
            written.extend(save_figure(fig, summary_plot_path(out_dir)))
    print_log(outputs_log_line(json_path, plot_dir), logger='current')
    out = dict(json=json_path, plot_dir=plot_dir, plots=written)
    extras = []
    if per_image is not None:
        out['per_image'] = osp.join(out_dir, PER_IMAGE_FILE)
        atomic_write_text(out['per_image'], per_image_csv_text(*per_image))
        extras.append(f"per-image table: {out['per_image']}")
    if save_plots and contact:
        sheets = []
        for name, by_set in contact['sheets'].items():
            for ood_set, items in by_set.items():
                fig = contact_sheet_figure(
                    items['ood'], items['id'], score_name=name,
                    ood_name=ood_set, id_name=contact['id_source'],
                    count=contact['count'])
                sheets.append(save_contact_sheet(
                    fig, contact_sheet_path(out_dir, name, ood_set)))
        out['contact_sheets'] = sheets
        extras.append(f'contact sheets: {len(sheets)} PNGs '
                      f'({osp.join(out_dir, PLOT_DIR)}/contact_*)')
    if extras:
        print_log('OoD ' + '; '.join(extras), logger='current')
    return out
