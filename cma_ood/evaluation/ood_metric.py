"""OoD detection metric over a multi-source test set (``OoDConcatDataset``)."""
import re
from collections import OrderedDict, defaultdict
from io import StringIO
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from .contact_sheet import (CONTACT_COUNT, THUMBNAIL_SIZE, contact_items,
                            make_thumbnail, merge_extremes, select_extremes)
from .functional import (BOOTSTRAP_RESAMPLES, METRIC_KEYS,
                         bootstrap_ood_metrics, check_protocol, ood_metrics,
                         percentile_interval, summarise_sets)
from .outputs import write_ood_outputs
from .per_image import per_image_table
from .streams import apply_stream_scorers, stream_embedding


#: Positive class of each metric protocol, for the table title.
_PROTOCOL_POSITIVE = dict(mos='ID positive', cma='ID positive',
                          openood='OoD positive')


#: Score keys of seed repeats: ``'{name}@seed=<s>'`` (ScorerOutput
#: variants), reported as the spread of ``name`` over its seeds.
SEED_VARIANT = re.compile(r'^(?P<name>.+)@seed=(?P<seed>-?\d+)$')


def _scalar(value) -> float:
    return float(value.item() if hasattr(value, 'item') else value)


def seed_variants(names: Sequence[str]) -> Dict[str, List[str]]:
    """``{name: [variant keys]}`` of the ``'{name}@seed=<s>'`` keys in
    ``names`` whose ``name`` is also in ``names`` (in first-seen order);
    other keys, ``@seed=`` ones without their main key included, are
    ordinary scores."""
    present = set(names)
    out: Dict[str, List[str]] = OrderedDict()
    for key in names:
        match = SEED_VARIANT.match(key)
        if match and match.group('name') in present:
            out.setdefault(match.group('name'), []).append(key)
    return out


def seed_variance(summaries: Sequence[Dict[str, Dict[str, float]]]
                  ) -> Dict[str, Dict[str, dict]]:
    """Mean, sample standard deviation (ddof 1; 0 for one seed) and count
    of each figure over the summaries of one score's seeds.

    Args:
        summaries: ``[{set or summary row: {metric: value}}]``, one per
            seed, the main key's first (rows missing from some are
            reported over the others).

    Returns:
        ``{row: {metric: {'mean', 'std', 'n'}}}``.
    """
    out = OrderedDict()
    for row in summaries[0]:
        out[row] = OrderedDict()
        for key in METRIC_KEYS:
            vals = np.array([s[row][key] for s in summaries
                             if row in s and key in s[row]], np.float64)
            out[row][key] = dict(
                mean=float(vals.mean()),
                std=float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                n=int(vals.size))
    return out


def _batch_image(data_batch, pos: int):
    """The input image of sample ``pos`` of a dataloader batch, as the
    pipeline left it (before normalisation), or None where the batch has
    no images (e.g. metric tests). ``DecodeOnDevice`` samples (an
    ``encoded`` entry, see ``stacked_collate``) are decoded from their
    file bytes on the CPU, uncropped (H, W, 3 BGR)."""
    if not isinstance(data_batch, dict):
        return None
    inputs = data_batch.get('inputs')
    encoded = data_batch.get('encoded')
    if isinstance(encoded, dict) and 'positions' in encoded:
        positions = [int(p) for p in encoded['positions']]
        if pos in positions:
            import mmcv
            k = positions.index(pos)
            start, end = (int(encoded['offsets'][k]),
                          int(encoded['offsets'][k + 1]))
            data = encoded['data'][start:end]
            data = data.numpy() if hasattr(data, 'numpy') else data
            try:
                return mmcv.imfrombytes(bytes(data), flag='color')
            except Exception:
                return None
        pos -= sum(p < pos for p in positions)
    if inputs is None:
        return None
    try:
        image = inputs[pos]
    except (IndexError, TypeError):
        return None
    return image if getattr(image, 'ndim', 0) in (2, 3) else None


def _unique_records(results: List[dict]) -> List[dict]:
    """One record per index in index order (a distributed sampler's
    padding repeats some), keeping a repeat's thumbnail where the first
    copy has none."""
    records: Dict[int, dict] = {}
    for r in results:
        kept = records.get(r['index'])
        if kept is None:
            records[r['index']] = r
        elif 'thumb' in r and 'thumb' not in kept:
            kept['thumb'] = r['thumb']
    return [records[i] for i in sorted(records)]


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

    How sure a number is (docs/diagnostics.md): with ``bootstrap=R`` every
    figure gets a percentile bootstrap interval (the ID and each OoD set
    resampled independently, R times,
    :func:`~cma_ood.evaluation.functional.bootstrap_ood_metrics`), logged as
    ``value ± half-width`` and stored as ``{metric}_lo`` / ``{metric}_hi``
    next to each figure of the JSON, with the settings under
    ``bootstrap``. Seed repeats of a scorer (score keys
    ``'{name}@seed=<s>'``) get no rows of their own: their figures go to
    ``seed_variant_scores`` and the mean / std / n over the seeds (main key
    included) to ``seed_variance`` (``{name: {set: {metric: {mean, std,
    n}}}}``), plus one table line per score.

    Looking at results: with ``per_image`` a row per image
    (:mod:`cma_ood.evaluation.per_image`) goes to ``ood_per_image.csv``
    beside the JSON; with ``contact_sheets`` (and ``save_plots``) one PNG
    per score and OoD set, ``ood_plots/contact_{score}_{set}.png``, shows
    the OoD images scored most ID-like and the ID images scored least
    ID-like (:mod:`cma_ood.evaluation.contact_sheet`), from thumbnails
    taken out of ``data_batch['inputs']`` while processing (only for the
    images in a running selection; they travel to the main process with
    the results). Stream scorers (AdaNeg) get neither CIs nor per-image
    columns nor sheets: their per-image scores here are placeholders.

    After each evaluation (on the main process) the metric keeps
    :attr:`last_report` (the JSON report: ``id_source``,
    ``metric_protocol``, ``scores``, ``num_samples``, ``id_accuracy_top1``,
    and ``skipped_images``, ``bootstrap``, ``seed_variance``,
    ``seed_variant_scores`` where present) and :attr:`last_scores`
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
        bootstrap (int): bootstrap resamples of the intervals; 0 disables
            them. Defaults to 1000.
        bootstrap_seed (int): seed of the resampling. Defaults to 0.
        ci (float): level of the intervals, in (0, 1). Defaults to 0.95.
        per_image (bool): write ``ood_per_image.csv``. Defaults to True
            (about 2 s and 26 MB for the 85,640 images of the MOS
            benchmark with 10 scores).
        contact_sheets (bool): keep thumbnails of the images a score gets
            most wrong and draw the sheets (only with ``save_plots``; about
            0.25 s per sheet). Defaults to False.
        contact_count (int): images per side of a sheet. Defaults to 16.
        thumbnail_size (int): longest side of a kept thumbnail in pixels
            (images are never enlarged). Defaults to 96.
        input_order (str): channel order of ``data_batch['inputs']``,
            ``'bgr'`` (mmpretrain's loaders and ``PackInputs``; the
            default) or ``'rgb'``.
    """
    default_prefix = 'ood'

    def __init__(self,
                 out_dir: Optional[str] = None,
                 save_plots: bool = True,
                 protocol: str = 'mos',
                 bootstrap: int = BOOTSTRAP_RESAMPLES,
                 bootstrap_seed: int = 0,
                 ci: float = 0.95,
                 per_image: bool = True,
                 contact_sheets: bool = False,
                 contact_count: int = CONTACT_COUNT,
                 thumbnail_size: int = THUMBNAIL_SIZE,
                 input_order: str = 'bgr',
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
        for key, value, low in (('bootstrap', bootstrap, 0),
                                ('bootstrap_seed', bootstrap_seed, 0),
                                ('contact_count', contact_count, 1),
                                ('thumbnail_size', thumbnail_size, 1)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or value < low:
                raise ValueError(f'OoDMetric: {key} must be an integer >= '
                                 f'{low}, got {value!r}')
        if not isinstance(ci, (float, int)) or not 0.0 < ci < 1.0:
            raise ValueError(f'OoDMetric: ci must be a level in (0, 1) such '
                             f'as 0.95, got {ci!r}')
        if input_order not in ('bgr', 'rgb'):
            raise ValueError(f"OoDMetric: input_order must be 'bgr' or "
                             f"'rgb', got {input_order!r}")
        self.bootstrap = int(bootstrap)
        self.bootstrap_seed = int(bootstrap_seed)
        self.ci = float(ci)
        self.per_image = bool(per_image)
        self.contact_sheets = bool(contact_sheets)
        self.contact_count = int(contact_count)
        self.thumbnail_size = int(thumbnail_size)
        self.input_order = input_order
        #: True when a hook (OoDOutputHook) writes the files instead.
        self.defer_outputs = False
        #: JSON report of the last evaluation (None before the first).
        self.last_report: Optional[dict] = None
        #: {score: {dataset: (n,) float64}} of the last evaluation.
        self.last_scores: Optional[Dict[str, Dict[str, np.ndarray]]] = None
        #: ``(header, rows)`` of ood_per_image.csv (None: not kept).
        self.last_per_image: Optional[tuple] = None
        #: the contact sheets of the last evaluation (None: not kept):
        #: ``dict(id_source, count, sheets={score: {set: dict(ood=items,
        #: id=items)}})`` with the items of :func:`contact_items`.
        self.last_contact: Optional[dict] = None
        self._reset_running()

    # --------------------------------------------------- running state
    def _reset_running(self) -> None:
        #: running selection per (score, source): [(key, index)]
        self._extremes: Dict[tuple, list] = {}
        #: index -> (record, number of selections holding its thumbnail)
        self._held: Dict[int, list] = {}

    def evaluate(self, size: int) -> dict:
        try:
            return super().evaluate(size)
        finally:
            self._reset_running()

    def _track_extremes(self, data_batch, records: List[dict]) -> None:
        """Update the running selections with one batch's records and
        give the images entering a selection a thumbnail (dropped when
        they leave every selection)."""
        id_source = (self.dataset_meta or {}).get('id_source', 'ID')
        variants = set()
        by_key = defaultdict(list)
        pos_of = {}
        for pos, r in enumerate(records):
            pos_of[r['index']] = pos
            for name, value in r['scores'].items():
                if name in variants or (self.stream_scorers and
                                        name in self.stream_scorers):
                    continue
                match = SEED_VARIANT.match(name)
                if match and match.group('name') in r['scores']:
                    variants.add(name)
                    continue
                by_key[(name, r['source'])].append((value, r['index']))
        for key, candidates in by_key.items():
            most = key[1] != id_source
            old = self._extremes.get(key, [])
            new = merge_extremes(old, candidates, self.contact_count,
                                 most_id_like=most)
            self._extremes[key] = new
            old_idx, new_idx = {i for _, i in old}, {i for _, i in new}
            for index in new_idx - old_idx:
                held = self._held.get(index)
                if held is None:
                    rec = records[pos_of[index]]
                    image = _batch_image(data_batch, pos_of[index])
                    if image is not None:
                        rec['thumb'] = make_thumbnail(
                            image, self.thumbnail_size,
                            bgr=self.input_order == 'bgr')
                    held = self._held[index] = [rec, 0]
                held[1] += 1
            for index in old_idx - new_idx:
                held = self._held[index]
                held[1] -= 1
                if held[1] == 0:
                    held[0].pop('thumb', None)
                    del self._held[index]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        first = len(self.results)
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
            if self.stream_scorers:  # stream scorers (AdaNeg): see below
                self.results[-1]['embedding'] = stream_embedding(
                    ds, list(self.stream_scorers))
            if self.per_image or self.contact_sheets:
                self._add_details(self.results[-1], ds)
        if self.contact_sheets and self.save_plots:
            self._track_extremes(data_batch, self.results[first:])

    # ------------------------------------------- stream scorers (AdaNeg)
    #: ``{name: scorer}`` of the model's stream scorers, handed over by
    #: PrepareScorersHook (:mod:`cma_ood.evaluation.streams`): ``process``
    #: keeps each sample's embedding, ``compute_metrics`` replaces their
    #: placeholder rows by their per-OoD-set streams.
    stream_scorers: Optional[dict] = None

    def set_stream_scorers(self, scorers) -> None:
        """Score ``scorers`` (stream scorers of the model) as streams."""
        self.stream_scorers = {s.name: s for s in scorers}

    # ------------------------------------------------- per-image details
    @staticmethod
    def _add_details(record: dict, ds) -> None:
        """File, top-1 cosine and best negative labels of one sample."""
        path = ds.get('img_path')
        if path is not None:
            record['path'] = str(path)
        cos = ds.get('pred_cos')
        if cos is not None:
            record['cos'] = _scalar(cos)
        negs = {}
        for name, details in (ds.get('ood_details') or {}).items():
            top = (details or {}).get('top_negatives')
            if top is not None:
                negs[name] = tuple(str(x) for x in top)
        if negs:
            record['neg'] = negs

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
        variants = seed_variants(list(scores))
        variant_keys = {k for keys in variants.values() for k in keys}
        all_scores, scores = scores, OrderedDict(
            (k, v) for k, v in scores.items() if k not in variant_keys)
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
            arrays = _checked_arrays(name, by_source, id_source)
            summary = _summary(arrays, id_source, ood_sources, groups,
                               self.protocol)
            for source, vals in summary.items():
                for key in METRIC_KEYS:
                    metrics[f'{name}/{source}/{key}'] = vals[key]
            report['scores'][name] = summary
            report['num_samples'] = {s: len(v) for s, v in arrays.items()}
            score_arrays[name] = arrays
        if self.bootstrap:
            self._add_intervals(report, score_arrays, id_source, groups)
        if variants:
            self._add_seed_variance(report, variants, all_scores, id_source,
                                    ood_sources, groups)
        if self.stream_scorers:  # stream scorers (AdaNeg): their streams
            apply_stream_scorers(self.stream_scorers, results, id_source,
                                 ood_sources, self.protocol, report,
                                 score_arrays, metrics, groups)
        if acc:
            report['id_accuracy_top1'] = metrics['accuracy/top1']
        self.last_report, self.last_scores = report, score_arrays
        self.last_per_image = self.last_contact = None
        if self.per_image or self.contact_sheets:
            records = _unique_records(results)
            shown = [n for n in all_scores
                     if not (self.stream_scorers and n in self.stream_scorers)]
            classes = (self.dataset_meta or {}).get('classes')
            if self.per_image:
                self.last_per_image = per_image_table(records, id_source,
                                                      shown, classes)
            if self.contact_sheets and self.save_plots:
                self.last_contact = self._contact(
                    records, [n for n in shown if n not in variant_keys],
                    id_source, ood_sources, classes)
        print_log('\n' + format_ood_table(report), logger='current')
        if self.out_dir and not self.defer_outputs:
            write_ood_outputs(report, score_arrays, self.out_dir,
                              save_plots=self.save_plots,
                              per_image=self.last_per_image,
                              contact=self.last_contact)
        return metrics

    # ------------------------------------------------- diagnostics
    def _add_intervals(self, report: dict, score_arrays: dict,
                       id_source: str, groups) -> None:
        """Bootstrap every figure of ``report['scores']``: ``{metric}_lo``
        and ``{metric}_hi`` beside it, settings in ``report['bootstrap']``.
        Scores whose arrays differ in length (they scored other images)
        are resampled separately."""
        names = [n for n in score_arrays
                 if not (self.stream_scorers and n in self.stream_scorers)]
        batches = OrderedDict()
        for name in names:
            arrays = score_arrays[name]
            shape = tuple((s, len(a)) for s, a in arrays.items())
            batches.setdefault(shape, []).append(name)
        for batch in batches.values():
            first = score_arrays[batch[0]]
            sets = [s for s in first if s != id_source]
            samples = bootstrap_ood_metrics(
                {n: score_arrays[n][id_source] for n in batch},
                OrderedDict((s, {n: score_arrays[n][s] for n in batch})
                            for s in sets),
                protocol=self.protocol, num_resamples=self.bootstrap,
                seed=self.bootstrap_seed)
            for name in batch:
                per_set = samples[name]
                rows = OrderedDict(per_set)
                rows['mean'] = {k: np.mean([v[k] for v in per_set.values()],
                                           axis=0) for k in METRIC_KEYS}
                for group, members in (groups or {}).items():
                    got = [per_set[m] for m in members if m in per_set]
                    if got:
                        rows[group] = {
                            k: np.mean([v[k] for v in got], axis=0)
                            for k in METRIC_KEYS}
                summary = report['scores'][name]
                for row, draws in rows.items():
                    if row not in summary:
                        continue
                    for key in METRIC_KEYS:
                        lo, hi = percentile_interval(draws[key], self.ci)
                        summary[row][f'{key}_lo'] = lo
                        summary[row][f'{key}_hi'] = hi
        report['bootstrap'] = dict(
            resamples=self.bootstrap, seed=self.bootstrap_seed,
            level=self.ci, interval='percentile',
            resampling='ID and each OoD set independently, with '
            'replacement, each at its own size; one ID resample per '
            'resample for all OoD sets of a score')

    def _add_seed_variance(self, report: dict, variants: dict,
                           all_scores: dict, id_source: str,
                           ood_sources: Sequence[str], groups) -> None:
        """Figures of every seed variant (``seed_variant_scores``) and
        their spread with the main key's (``seed_variance``)."""
        report['seed_variant_scores'] = OrderedDict()
        report['seed_variance'] = OrderedDict()
        for name, keys in variants.items():
            if name not in report['scores']:
                continue
            summaries = [report['scores'][name]]
            for key in keys:
                arrays = _checked_arrays(key, all_scores[key], id_source)
                summary = _summary(arrays, id_source, ood_sources, groups,
                                   self.protocol)
                report['seed_variant_scores'][key] = summary
                summaries.append(summary)
            report['seed_variance'][name] = seed_variance(summaries)

    def _contact(self, records: List[dict], names: Sequence[str],
                 id_source: str, ood_sources: Sequence[str],
                 classes) -> dict:
        """The contact sheets' images: per score, the ID images scored
        least ID-like and per OoD set those scored most ID-like
        (:func:`select_extremes` over all gathered records)."""
        by_source = defaultdict(list)
        for pos, r in enumerate(records):
            by_source[r['source']].append(pos)
        sheets = OrderedDict()
        for name in names:
            picks = {}
            for source in [id_source] + list(ood_sources):
                positions = [p for p in by_source.get(source, [])
                             if name in records[p]['scores']]
                if not positions:
                    continue
                chosen = select_extremes(
                    [records[p]['scores'][name] for p in positions],
                    [records[p]['index'] for p in positions],
                    self.contact_count, most_id_like=source != id_source)
                picks[source] = contact_items(
                    records, [positions[i] for i in chosen], name, classes)
            if id_source not in picks:
                continue
            sheets[name] = OrderedDict(
                (s, dict(ood=picks[s], id=picks[id_source]))
                for s in ood_sources if s in picks)
        return dict(id_source=id_source, count=self.contact_count,
                    sheets=sheets)


def _checked_arrays(name: str, by_source: dict,
                    id_source: str) -> Dict[str, np.ndarray]:
    """``{source: float64 scores}`` of one score key, with an error naming
    the key and the set where the ID set is missing or a score is not
    finite."""
    if id_source not in by_source:
        raise ValueError(f'OoDMetric: no ID samples ({id_source!r}) were '
                         f'scored with {name!r}')
    arrays = {s: np.asarray(v, np.float64) for s, v in by_source.items()}
    for source, arr in arrays.items():
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise ValueError(
                f'OoDMetric: score {name!r} is NaN or infinite for '
                f'{bad} of {arr.size} samples of dataset {source!r}')
    return arrays


def _summary(arrays: Dict[str, np.ndarray], id_source: str,
             ood_sources: Sequence[str], groups, protocol: str):
    """The metrics of each OoD set against the ID set (in
    ``ood_sources`` order), their ``mean`` and each group's mean."""
    return summarise_sets(OrderedDict(
        (s, ood_metrics(arrays[id_source], arrays[s], protocol=protocol))
        for s in ood_sources if s in arrays), groups)


def format_ood_table(report: dict) -> str:
    """Render the OoD report (as written to JSON) as a text table.

    The title names the report's ``metric_protocol`` (``'mos'`` for reports
    written before the key existed, the only convention then). A figure
    with a bootstrap interval (``{metric}_lo`` / ``_hi``) reads ``value ±
    half-width`` (half the interval's width; the interval need not be
    symmetric, the JSON has its ends); a score with seed repeats
    (``seed_variance``) gets a last line with the mean ± standard deviation
    over its seeds of the mean over the OoD sets.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    acc = report.get('id_accuracy_top1')
    protocol = report.get('metric_protocol', 'mos')
    positive = _PROTOCOL_POSITIVE.get(protocol, '')
    caption = 'FPR95 lower is better, the others higher'
    boot = report.get('bootstrap')
    if boot:
        caption += (f"; ± half-width of the {100 * boot['level']:g}% "
                    f"bootstrap interval ({boot['resamples']} resamples)")
    table = Table(
        title=f"OoD detection, '{protocol}' metrics"
        f"{' (' + positive + ')' if positive else ''}, in %",
        caption=caption)
    for col in ('score', 'OoD set', *METRIC_KEYS, 'N'):
        table.add_column(col, justify='left' if col in (
            'score', 'OoD set') else 'right')
    sizes = report.get('num_samples', {})
    spreads = report.get('seed_variance', {})

    def cell(vals, k):
        lo, hi = vals.get(f'{k}_lo'), vals.get(f'{k}_hi')
        if lo is None or hi is None:
            return f'{vals[k]:.2f}'
        return f'{vals[k]:.2f} ± {(hi - lo) / 2:.2f}'

    # a stream scorer's per-stream pairs ('AdaNeg[SUN]', kept in the JSON
    # for their plots) repeat its own row's figures: not shown twice
    stream_rows = tuple(f'{name}[' for name in report.get('streams', {}))
    for name, summary in report['scores'].items():
        if stream_rows and name.startswith(stream_rows):
            continue
        spread = spreads.get(name, {}).get('mean')
        for i, (source, vals) in enumerate(summary.items()):
            # names are plain text, not rich markup ('[...]' is markup)
            table.add_row(escape(name) if i == 0 else '', escape(source),
                          *[cell(vals, k) for k in METRIC_KEYS],
                          str(sizes.get(source, '')),
                          end_section=i == len(summary) - 1 and not spread)
        if spread:
            n = spread[METRIC_KEYS[0]]['n']
            table.add_row(
                '', f'mean, {n} seeds (± sd)',
                *[f"{spread[k]['mean']:.2f} ± {spread[k]['std']:.2f}"
                  for k in METRIC_KEYS], '', end_section=True)
    console = Console(file=StringIO(), width=120, force_terminal=False)
    console.print(table)
    if acc is not None:
        console.print(f'ID top-1 accuracy: {acc:.2f}')
    if report.get('skipped_images'):
        console.print('Broken images skipped (skip_broken=True): ' +
                      ', '.join(f'{k}: {v}'
                                for k, v in report['skipped_images'].items()))
    return console.file.getvalue()
