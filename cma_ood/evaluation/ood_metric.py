"""OoD detection metric over a multi-source test set (``OoDConcatDataset``)."""
from collections import OrderedDict, defaultdict
from io import StringIO
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from .functional import check_protocol, ood_metrics
from .outputs import write_ood_outputs

METRIC_KEYS = ('FPR95', 'AUROC', 'AUPR_IN', 'AUPR_OUT')

#: Positive class of each metric protocol, for the table title.
_PROTOCOL_POSITIVE = dict(mos='ID positive', cma='ID positive',
                          openood='OoD positive')


def _scalar(value) -> float:
    return float(value.item() if hasattr(value, 'item') else value)


@METRICS.register_module()
class OoDMetric(BaseMetric):
    """FPR95 / AUROC / AUPR-In / AUPR-Out per OoD set and score, plus ID
    top-1 accuracy.

    Expects data samples tagged by :class:`OoDConcatDataset`
    (``ood_source``, ``ood_index``) with ``ood_scores`` from the model's
    scorers (higher = ID) and, for ID samples, ``pred_label``/``gt_label``.
    Metrics are those of :func:`cma_ood.evaluation.ood_metrics` under the
    chosen ``protocol`` (figures in percent); the protocol is named in the
    logged table's title and recorded as ``metric_protocol`` in the JSON.

    Samples are keyed by their concatenation index, so the duplicates a
    distributed sampler pads with never count twice. Non-finite scores are
    an error naming the score and the dataset.

    Results: ``{score}/{ood set}/{metric}``, ``{score}/mean/{metric}`` (mean
    over the OoD sets), ``{score}/{group}/{metric}`` for the dataset's
    ``ood_groups`` and ``accuracy/top1``. A table per score is logged.

    After each evaluation (on the main process) the metric keeps
    :attr:`last_report` (the JSON report: ``id_source``,
    ``metric_protocol``, ``scores``, ``num_samples``, ``id_accuracy_top1``
    and ``skipped_images`` where present) and :attr:`last_scores`
    (``{score: {dataset: (n,) float64 scores}}``, ID set included, in
    dataset order). The files are written from them by
    :func:`cma_ood.evaluation.outputs.write_ood_outputs`: ``ood_results.json``
    and, per score and OoD set, ROC + histogram plots
    ``ood_plots/{score}_{set}.png`` / ``.pdf`` plus ``ood_plots/summary``.
    In a runner, :class:`~cma_ood.engine.hooks.OoDOutputHook` sets
    :attr:`defer_outputs` and writes them itself into ``out_dir`` (default:
    the run's log dir), adding the run's ``provenance`` to the JSON;
    otherwise the metric writes them when ``out_dir`` is set.

    Args:
        out_dir (str, optional): where to write JSON and plots.
        save_plots (bool): write the PNG/PDF plots. Defaults to True.
        protocol (str): metric convention, ``'mos'`` (ID positive, FPR95 at
            the ID recall closest to 95%, AUPR = average precision; the
            default), ``'cma'`` (CMA's ``utils/metrics.py``: ID positive,
            interpolated FPR95, trapezoid AUPR) or ``'openood'`` (OpenOOD
            v1.5: OoD positive, FPR at the first point with 95% OoD TPR,
            trapezoid AUPR). See :func:`cma_ood.evaluation.ood_metrics`.
    """
    default_prefix = 'ood'

    def __init__(self,
                 out_dir: Optional[str] = None,
                 save_plots: bool = True,
                 protocol: str = 'mos',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None):
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir)
        self.out_dir = out_dir
        self.save_plots = save_plots
        self.protocol = check_protocol(protocol, owner='OoDMetric')
        #: True when a hook (OoDOutputHook) writes the files instead.
        self.defer_outputs = False
        #: JSON report of the last evaluation (None before the first).
        self.last_report: Optional[dict] = None
        #: {score: {dataset: (n,) float64}} of the last evaluation.
        self.last_scores: Optional[Dict[str, Dict[str, np.ndarray]]] = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            if 'ood_source' not in ds or 'ood_scores' not in ds:
                raise KeyError(
                    'OoDMetric needs samples with "ood_source" (use '
                    'OoDConcatDataset) and "ood_scores" (configure '
                    'ood_scorers in the model)')
            gt = ds.get('gt_label')
            pred = ds.get('pred_label')
            self.results.append(
                dict(
                    index=int(ds['ood_index']),
                    source=ds['ood_source'],
                    scores={
                        k: _scalar(v)
                        for k, v in ds['ood_scores'].items()
                    },
                    gt=-1 if gt is None else int(_scalar(gt[0])),
                    pred=-1 if pred is None else int(_scalar(pred[0]))))

    # ------------------------------------------------------------------
    def _group(self, results: List[dict]):
        """Deduplicate by index and gather scores per (score, source)."""
        seen = set()
        scores = defaultdict(lambda: defaultdict(list))
        acc = []
        id_source = (self.dataset_meta or {}).get('id_source', 'ID')
        sources = list((self.dataset_meta or {}).get('ood_sources', []))
        for r in sorted(results, key=lambda r: r['index']):
            if r['index'] in seen:
                continue
            seen.add(r['index'])
            if r['source'] not in sources:
                sources.append(r['source'])
            for name, value in r['scores'].items():
                scores[name][r['source']].append(value)
            if r['source'] == id_source and r['gt'] >= 0:
                acc.append(r['pred'] == r['gt'])
        return id_source, sources, scores, acc

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        id_source, sources, scores, acc = self._group(results)
        ood_sources = [s for s in sources if s != id_source]
        groups = (self.dataset_meta or {}).get('ood_groups', {})
        metrics = OrderedDict()
        report = dict(id_source=id_source, metric_protocol=self.protocol,
                      scores={}, num_samples={})
        skipped = (self.dataset_meta or {}).get('skipped_images')
        if skipped:
            report['skipped_images'] = dict(skipped)
        if acc:
            metrics['accuracy/top1'] = 100.0 * float(np.mean(acc))
        score_arrays = OrderedDict()
        for name, by_source in scores.items():
            if id_source not in by_source:
                raise ValueError(f'OoDMetric: no ID samples ({id_source!r}) '
                                 f'were scored with {name!r}')
            arrays = {s: np.asarray(v, np.float64)
                      for s, v in by_source.items()}
            for source, arr in arrays.items():
                bad = int((~np.isfinite(arr)).sum())
                if bad:
                    raise ValueError(
                        f'OoDMetric: score {name!r} is NaN or infinite for '
                        f'{bad} of {arr.size} samples of dataset {source!r}')
            per_set = OrderedDict()
            for source in ood_sources:
                if source in arrays:
                    per_set[source] = ood_metrics(
                        arrays[id_source], arrays[source],
                        protocol=self.protocol)
            summary = OrderedDict(per_set)
            summary['mean'] = _mean(per_set.values())
            for group, members in groups.items():
                member_metrics = [per_set[m] for m in members if m in per_set]
                if member_metrics:
                    summary[group] = _mean(member_metrics)
            for source, vals in summary.items():
                for key in METRIC_KEYS:
                    metrics[f'{name}/{source}/{key}'] = vals[key]
            report['scores'][name] = summary
            report['num_samples'] = {s: len(v) for s, v in arrays.items()}
            score_arrays[name] = arrays
        if acc:
            report['id_accuracy_top1'] = metrics['accuracy/top1']
        self.last_report, self.last_scores = report, score_arrays
        print_log('\n' + format_ood_table(report), logger='current')
        if self.out_dir and not self.defer_outputs:
            write_ood_outputs(report, score_arrays, self.out_dir,
                              save_plots=self.save_plots)
        return metrics


def _mean(per_set) -> Dict[str, float]:
    per_set = list(per_set)
    return {k: float(np.mean([m[k] for m in per_set])) for k in METRIC_KEYS}


def format_ood_table(report: dict) -> str:
    """Render the OoD report (as written to JSON) as a text table.

    The title names the report's ``metric_protocol`` (``'mos'`` for reports
    written before the key existed, the only convention then).
    """
    from rich.console import Console
    from rich.table import Table
    acc = report.get('id_accuracy_top1')
    protocol = report.get('metric_protocol', 'mos')
    positive = _PROTOCOL_POSITIVE.get(protocol, '')
    table = Table(
        title=f"OoD detection, '{protocol}' metrics"
        f"{' (' + positive + ')' if positive else ''}, in %",
        caption='FPR95 lower is better, the others higher')
    for col in ('score', 'OoD set', *METRIC_KEYS, 'N'):
        table.add_column(col, justify='left' if col in (
            'score', 'OoD set') else 'right')
    sizes = report.get('num_samples', {})
    for name, summary in report['scores'].items():
        for i, (source, vals) in enumerate(summary.items()):
            table.add_row(name if i == 0 else '', source,
                          *[f'{vals[k]:.2f}' for k in METRIC_KEYS],
                          str(sizes.get(source, '')),
                          end_section=i == len(summary) - 1)
    console = Console(file=StringIO(), width=120, force_terminal=False)
    console.print(table)
    if acc is not None:
        console.print(f'ID top-1 accuracy: {acc:.2f}')
    if report.get('skipped_images'):
        console.print('Broken images skipped (skip_broken=True): ' +
                      ', '.join(f'{k}: {v}'
                                for k, v in report['skipped_images'].items()))
    return console.file.getvalue()
