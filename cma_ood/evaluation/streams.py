"""Stream scores in :class:`~cma_ood.evaluation.OoDMetric` (AdaNeg).

A *stream scorer* (a model scorer with ``score_streams``, e.g.
:class:`~cma_ood.models.ood_scorers.AdaNegScorer`) scores images in an
order-dependent way: its score of an image depends on the images seen
before it, and the published protocol runs one stream per OoD set, [that
set + the ID set], so an ID image gets one score per OoD set. During the
test loop such a scorer returns a placeholder score and each image's
embedding; the metric keeps the embeddings (fp16, on the CPU, gathered to
the main process with the other results) and, at compute time, replaces
the scorer's rows by the streams' results:

* :func:`hand_over_stream_scorers` (called by :class:`~cma_ood.engine.
  hooks.PrepareScorersHook` before the loop) gives the metric the model's
  stream scorers;
* :func:`stream_embedding` is what the metric's ``process`` keeps per
  sample;
* :func:`apply_stream_scorers` runs the streams and rewrites the report:
  the scorer's row ``{name}`` (per OoD set: that set's stream, ID and OoD
  scores; the mean and the groups as usual), one row and score array per
  stream ``{name}[{set}]`` (its own ID scores, so plots and arrays stay
  pairs of one stream), and ``report['streams'][name]``: the stream
  settings (seed, ID ratio, ...) and each stream's sizes.
"""
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from mmengine.logging import print_log

from .functional import METRIC_KEYS, ood_metrics, summarise_sets

#: the ``ood_details`` key of a stream scorer's image embeddings
EMBEDDING_KEY = 'embedding'


def is_stream_scorer(scorer) -> bool:
    """Whether a model scorer is scored as streams by the metric."""
    return callable(getattr(scorer, 'score_streams', None))


def hand_over_stream_scorers(model, evaluator,
                             validating: bool = False) -> List:
    """Give every metric of ``evaluator`` that runs streams
    (``set_stream_scorers``) the model's stream scorers that will score
    (all, or with ``validating`` those with ``at_validation``).

    Raises:
        RuntimeError: stream scorers but no metric that runs them (their
            placeholder scores would be reported as if they were theirs).
    """
    scorers = [
        s for s in (getattr(model, 'ood_scorers', None) or [])
        if is_stream_scorer(s) and (not validating or s.at_validation)
    ]
    metrics = [
        m for m in (getattr(evaluator, 'metrics', None) or [])
        if callable(getattr(m, 'set_stream_scorers', None))
    ]
    for metric in metrics:
        metric.set_stream_scorers(scorers)
    if scorers and not metrics:
        names = ', '.join(s.name for s in scorers)
        raise RuntimeError(
            f'stream scorer(s) {names} need OoDMetric in the evaluator, '
            'which runs their streams; add dict(type="OoDMetric") or remove '
            'them from model.ood_scorers')
    return scorers


def stream_embedding(sample: Mapping, names: Sequence[str]) -> np.ndarray:
    """The image embedding of a sample that a stream scorer stored in
    ``ood_details[name]['embedding']``, as a compact fp16 numpy copy (a
    tensor row would pickle its whole batch when results are gathered)."""
    details = sample.get('ood_details') or {}
    for name in names:
        emb = (details.get(name) or {}).get(EMBEDDING_KEY)
        if emb is not None:
            if torch.is_tensor(emb):
                emb = emb.detach().cpu().float().numpy()
            return np.array(emb, dtype=np.float16).reshape(-1)
    raise KeyError(
        f'OoDMetric: sample {sample.get("ood_index")} has no image embedding '
        f'of the stream scorer(s) {list(names)} in ood_details; did the '
        'model score it with them?')


def _embeddings_by_source(results: Sequence[Mapping]) -> Dict[str, tuple]:
    """``{source: (indices, (n, D) fp16 array)}`` in dataset order, one
    entry per index (a distributed sampler's padding dropped)."""
    seen, rows = set(), OrderedDict()
    for r in sorted(results, key=lambda r: r['index']):
        if r['index'] in seen:
            continue
        seen.add(r['index'])
        if 'embedding' not in r:
            raise KeyError(
                f'OoDMetric: result {r["index"]} ({r["source"]}) has no '
                'stream embedding')
        rows.setdefault(r['source'], ([], []))
        rows[r['source']][0].append(r['index'])
        rows[r['source']][1].append(r['embedding'])
    return {s: (idx, np.stack(embs)) for s, (idx, embs) in rows.items()}


def apply_stream_scorers(scorers: Mapping[str, object],
                         results: Sequence[Mapping],
                         id_source: str,
                         ood_sources: Sequence[str],
                         protocol: str,
                         report: dict,
                         score_arrays: dict,
                         metrics: dict,
                         groups: Optional[Mapping[str, Sequence[str]]] = None
                         ) -> None:
    """Run each stream scorer's streams and put their results into the
    metric's ``report``, ``score_arrays`` and ``metrics`` (in place; see the
    module doc). The placeholder row of each scorer is replaced; its
    position in the report is kept."""
    if not scorers:
        return
    by_source = _embeddings_by_source(results)
    if id_source not in by_source:
        raise ValueError(f'OoDMetric: no ID samples ({id_source!r}) for the '
                         f'stream scorers {list(scorers)}')
    id_embeds = torch.from_numpy(by_source[id_source][1])
    ood_embeds = OrderedDict(
        (s, torch.from_numpy(by_source[s][1])) for s in ood_sources
        if s in by_source)
    for name, scorer in scorers.items():
        streams = scorer.score_streams(id_embeds, ood_embeds)
        per_set, sets = OrderedDict(), OrderedDict()
        pairs = OrderedDict()
        for source, out in streams.items():
            id_arr = np.asarray(out['id_scores'], np.float64)
            ood_arr = np.asarray(out['ood_scores'], np.float64)
            for what, arr in ((id_source, id_arr), (source, ood_arr)):
                bad = int((~np.isfinite(arr)).sum())
                if bad:
                    raise ValueError(
                        f'OoDMetric: stream score {name!r} is NaN or '
                        f'infinite for {bad} of {arr.size} samples of '
                        f'dataset {what!r} (stream over {source!r})')
            per_set[source] = ood_metrics(id_arr, ood_arr, protocol=protocol)
            sets[source] = dict(num_id=int(id_arr.size),
                                num_ood=int(ood_arr.size))
            pairs[source] = (id_arr, ood_arr)
        summary = summarise_sets(per_set, groups) if per_set \
            else OrderedDict()
        for key in [k for k in metrics if k.startswith(f'{name}/')]:
            del metrics[key]
        for source, vals in summary.items():
            for key in METRIC_KEYS:
                metrics[f'{name}/{source}/{key}'] = vals[key]
        report.setdefault('scores', {})[name] = summary
        score_arrays.pop(name, None)
        for source, (id_arr, ood_arr) in pairs.items():
            key = f'{name}[{source}]'
            report['scores'][key] = OrderedDict([(source, per_set[source])])
            score_arrays[key] = OrderedDict([(id_source, id_arr),
                                             (source, ood_arr)])
        info = dict(scorer.stream_info()) if callable(
            getattr(scorer, 'stream_info', None)) else {}
        info['sets'] = sets
        report.setdefault('streams', {})[name] = info
        if not per_set:
            print_log(f'OoDMetric: stream scorer {name!r} found no OoD set',
                      logger='current', level=logging.WARNING)
