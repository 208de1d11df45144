"""AdaNeg (NeurIPS 2024) as a registered OoD scorer.

:class:`AdaNegScorer` is a :class:`~.neglabel.NegLabelScorer` with
AdaNeg's negative labels (:func:`~.functional.adaneg.adaneg_pools`,
:func:`~.functional.adaneg.adaneg_select_negatives`, mined through the same
cache) and a test-time memory. Its score depends on the order in which the
test images arrive, so it is a **stream score**: the per-batch
:meth:`~AdaNegScorer.forward` returns the memory-free vanilla score ``s_v``
as a placeholder together with each image's normalised embedding
(``per_image['embedding']``, fp16, kept on the CPU by the metric), and
:class:`~cma_ood.evaluation.OoDMetric`, which
:class:`~cma_ood.engine.hooks.PrepareScorersHook` hands the stream scorers
to, replaces the placeholder at compute time by
:meth:`~AdaNegScorer.score_streams` on the collected embeddings: one
seeded stream per OoD set, [that set + the ID set] shuffled, from an empty
memory (docs/scorers_adaneg_glmcm.md).
"""
import hashlib
import json
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ...datasets.neglabel_candidates import (ADJ, NOUN, candidate_file_order,
                                             read_candidates)
from ...datasets.wordnet import DEFAULT_LEXNAMES
from ..utils.checks import check_choice, check_positive_int
from .base import ScorerContext, ScorerOutput
from .functional.adaneg import (ENTROPY_PRECISIONS, PROXIES, SCORE_MODES,
                                adaneg_pools, adaneg_select_negatives,
                                adaneg_stream, adaneg_stream_order,
                                adaneg_thresholds)
from .functional.neglabel import neglabel_score
from .neglabel import NegLabelScorer

#: bumped whenever AdaNeg's selection rule or its cache content changes
ADANEG_RULE_VERSION = 1


@MODELS.register_module()
class AdaNegScorer(NegLabelScorer):
    """AdaNeg: test-time adaptive negative proxies (a stream score).

    Text side (:meth:`prepare`, cached like NegLabel's mining): the nouns
    of all noun files and the adjectives of all adjective files, minus the
    ID class names, minus the adjectives that are also nouns
    (:func:`~.functional.adaneg.adaneg_pools`); the ``num_negatives``
    least ID-like of them, split between the pools in proportion to their
    sizes, by the ``int(C * level)``-th smallest cosine to the ID prompts
    (:func:`~.functional.adaneg.adaneg_select_negatives`). Label order
    [ID classes, adjectives, nouns]; the negatives are split once into
    ``ngroup`` seeded groups as NegLabel's.

    Stream (:meth:`score_streams`, run by the metric): for each OoD set, a
    fresh memory and [that set, the ID set] shuffled with ``stream_seed``
    (``id_ratio``: only ``id_ratio`` ID images per OoD image), scored
    ``stream_batch_size`` images at a time by
    :func:`~.functional.adaneg.adaneg_stream`.

    Args:
        txt_dir, lexnames, cache_dir, neg_labels_file, dump_labels,
            batch_size, show_progress, cache_max_bytes: as
            :class:`NegLabelScorer` (``neg_labels_file`` must list the
            negatives in AdaNeg's order, adjectives first, e.g. a file
            written by ``dump_labels``).
        noun_template (str): prompt of nouns (AdaNeg: ``'The nice {}.'``).
        adj_template (str): prompt of adjectives (``'This is a {} photo.'``).
        num_negatives (int): negatives kept (AdaNeg: 10,000).
        level (float): the affinity's order-statistic level (0.95).
        ngroup (int): groups of both scores (AdaNeg: 5).
        seed (int): seed of the group split (AdaNeg: 0).
        memory_length (int): the published ``memleng`` (10).
        fill_last_slot (bool): let all ``memory_length`` image entries of a
            slot fill; ``False`` (default) reproduces the published code,
            where only ``memory_length - 1`` ever do.
        thres (float), gap (float): write thresholds (0.5, 0.5: an image
            is written if ``s_v > 0.75`` or ``s_v < 0.25``).
        beta (float): sharpness of the sample-adaptive weights (the
            published ``int(5.5) = 5``).
        proxy (str): ``'task'`` (AdaNeg's main result, ``samada=False``)
            or ``'sample'``-adaptive proxies.
        score_mode (str): ``'combine'`` (``s_a + lambda_vanilla * s_v``,
            AdaNeg), ``'adaptive'``, ``'vanilla'`` or ``'multiply'``.
        lambda_vanilla (float): weight of ``s_v`` (AdaNeg: 0.1).
        entropy_precision (str): ``'half'`` (default) computes the memory's
            entropy priority as the published float16 run does (NaN when a
            probability underflows, which freezes full slots); ``'float'``
            the documented float32 rule.
        logit_scale (float, optional): the logits' scale; ``None`` (default)
            uses the model's (CLIP's 100, as the published code).
        stream_seed (int): seed of each stream's shuffle (and ID subset).
        id_ratio (float, optional): ID images per OoD image in each stream
            (a seeded subsample); ``None`` (default, published): all.
        stream_batch_size (int): images per stream step (AdaNeg: 256).
        at_validation (bool): off by default (the stream runs at test).
        name (str, optional): results key; ``'AdaNeg'`` by default.
    """
    default_name = 'AdaNeg'
    #: the log messages' prefix (NegLabelScorer's shared messages)
    log_name = 'AdaNeg'

    def __init__(self,
                 txt_dir: Optional[str] = None,
                 lexnames: Sequence[str] = DEFAULT_LEXNAMES,
                 noun_template: str = 'The nice {}.',
                 adj_template: str = 'This is a {} photo.',
                 num_negatives: int = 10000,
                 level: float = 0.95,
                 ngroup: int = 5,
                 seed: int = 0,
                 memory_length: int = 10,
                 fill_last_slot: bool = False,
                 thres: float = 0.5,
                 gap: float = 0.5,
                 beta: float = 5.0,
                 proxy: str = 'task',
                 score_mode: str = 'combine',
                 lambda_vanilla: float = 0.1,
                 entropy_precision: str = 'half',
                 logit_scale: Optional[float] = None,
                 stream_seed: int = 0,
                 id_ratio: Optional[float] = None,
                 stream_batch_size: int = 256,
                 cache_dir: Union[None, str, bool] = None,
                 neg_labels_file: Optional[str] = None,
                 dump_labels: Optional[str] = None,
                 batch_size: int = 1024,
                 show_progress: bool = True,
                 cache_max_bytes: int = 2**30,
                 at_validation: bool = False,
                 name: Optional[str] = None):
        super().__init__(
            txt_dir=txt_dir,
            lexnames=lexnames,
            noun_template=noun_template,
            adj_template=adj_template,
            percentile=level,
            ratio=1.0,
            temperature=0.01,
            ngroup=ngroup,
            seed=seed,
            cache_dir=cache_dir,
            neg_labels_file=neg_labels_file,
            dump_labels=dump_labels,
            batch_size=batch_size,
            show_progress=show_progress,
            cache_max_bytes=cache_max_bytes,
            at_validation=at_validation,
            name=name)
        # (NegLabelScorer.num_negatives is the number in use)
        self.negatives_to_keep = check_positive_int(
            num_negatives, 'AdaNegScorer: num_negatives')
        self.level = float(level)
        self.memory_length = check_positive_int(memory_length,
                                                'AdaNegScorer: memory_length')
        if not fill_last_slot and memory_length < 2:
            raise ValueError(
                'AdaNegScorer: memory_length must be >= 2 with '
                'fill_last_slot=False (the published rule fills '
                'memory_length - 1 image entries)')
        self.fill_last_slot = bool(fill_last_slot)
        adaneg_thresholds(thres, gap)
        self.thres, self.gap = float(thres), float(gap)
        self.beta = float(beta)
        self.proxy = check_choice(proxy, PROXIES, 'AdaNegScorer: proxy')
        self.score_mode = check_choice(score_mode, SCORE_MODES,
                                       'AdaNegScorer: score_mode')
        self.lambda_vanilla = float(lambda_vanilla)
        self.entropy_precision = check_choice(
            entropy_precision, ENTROPY_PRECISIONS,
            'AdaNegScorer: entropy_precision')
        if logit_scale is not None and not logit_scale > 0:
            raise ValueError('AdaNegScorer: logit_scale must be > 0 or None, '
                             f'got {logit_scale!r}')
        self.logit_scale = None if logit_scale is None else float(logit_scale)
        if isinstance(stream_seed, bool) or not isinstance(stream_seed, int):
            raise ValueError('AdaNegScorer: stream_seed must be an int, got '
                             f'{stream_seed!r}')
        self.stream_seed = stream_seed
        if id_ratio is not None and not id_ratio > 0:
            raise ValueError('AdaNegScorer: id_ratio must be > 0 or None, '
                             f'got {id_ratio!r}')
        self.id_ratio = None if id_ratio is None else float(id_ratio)
        self.stream_batch_size = check_positive_int(
            stream_batch_size, 'AdaNegScorer: stream_batch_size')
        self._seen_scale: Optional[torch.Tensor] = None
        self.register_buffer('text_embeds', None, persistent=False)

    # ------------------------------------------------------------ mining
    def read_candidates(self):
        """AdaNeg's pools before removing the ID class names (done in
        :meth:`mine`, which knows them): the union of the noun files and of
        the adjective files, adjectives that are nouns removed."""
        txt_dir = self.resolved_txt_dir()
        noun_lists, adj_lists = [], []
        for lexname in candidate_file_order(self.lexnames):
            nouns, adjs = read_candidates(txt_dir, [lexname])
            noun_lists.append(nouns)
            adj_lists.append(adjs)
        return adaneg_pools(noun_lists, adj_lists, ())

    def cache_key(self, context: ScorerContext, nouns, adjs) -> str:
        hasher = hashlib.sha256(
            super().cache_key(context, nouns, adjs).encode('ascii'))
        hasher.update(
            json.dumps(dict(rule='adaneg', version=ADANEG_RULE_VERSION,
                            num_negatives=self.negatives_to_keep,
                            level=self.level)).encode('utf-8'))
        return hasher.hexdigest()

    def mine(self, context: ScorerContext, nouns, adjs) -> dict:
        """Encode AdaNeg's pools and keep its negatives (adjectives, then
        nouns, each by ascending affinity)."""
        nouns, adjs = adaneg_pools([nouns], [adjs], context.classnames)
        print_log(
            f'AdaNeg: encoding {len(nouns)} noun and {len(adjs)} adjective '
            'candidate labels', logger='current')
        kinds = [NOUN] * len(nouns) + [ADJ] * len(adjs)
        feats = self.encode(context, self.prompts(nouns + adjs, kinds))
        noun_feats, adj_feats = feats[:len(nouns)], feats[len(nouns):]
        adj_idx, noun_idx = adaneg_select_negatives(
            context.class_embeddings().float(), noun_feats, adj_feats,
            self.negatives_to_keep, self.level)
        adj_idx, noun_idx = adj_idx.cpu(), noun_idx.cpu()
        labels = [adjs[i] for i in adj_idx.tolist()] + \
                 [nouns[i] for i in noun_idx.tolist()]
        embeds = torch.cat([adj_feats[adj_idx.to(adj_feats.device)],
                            noun_feats[noun_idx.to(noun_feats.device)]])
        print_log(
            f'AdaNeg: selected {len(labels)} negative labels '
            f'({len(adj_idx)} of {len(adjs)} adjectives, {len(noun_idx)} of '
            f'{len(nouns)} nouns; level {self.level})', logger='current')
        return dict(labels=labels,
                    kinds=[ADJ] * len(adj_idx) + [NOUN] * len(noun_idx),
                    embeds=embeds)

    def prepare(self, context: ScorerContext) -> None:
        """The negatives (mined, cached or read) and the label prompt
        embeddings ``[ID, negatives]`` of the memory."""
        super().prepare(context)
        self.text_embeds = torch.cat(
            [context.class_embeddings().float().to(self.neg_embeds.device),
             self.neg_embeds])
        self._seen_scale = None

    # ---------------------------------------------------------- scoring
    def _scale(self, logit_scale=None) -> float:
        if self.logit_scale is not None:
            return self.logit_scale
        scale = logit_scale if logit_scale is not None else self._seen_scale
        if scale is None:
            raise RuntimeError(
                f'AdaNegScorer ({self.name}): the model\'s logit scale is '
                'unknown before the first scored batch; set logit_scale')
        return float(scale)

    def forward(self, image_embeds: torch.Tensor, cos_sim: torch.Tensor,
                logit_scale: torch.Tensor) -> ScorerOutput:
        """The placeholder: the vanilla score ``s_v`` (NegLabel's grouped
        score at temperature ``1 / logit_scale``, memory-free) and each
        image's embedding, for the stream the metric runs."""
        if self.neg_embeds is None:
            raise RuntimeError('AdaNegScorer.prepare(context) must run '
                               'before scoring')
        if self.logit_scale is None:
            self._seen_scale = logit_scale.detach()
        with torch.autocast(image_embeds.device.type, enabled=False):
            neg_sim = image_embeds.float() @ self.neg_embeds.to(
                image_embeds.device).T
            vanilla = neglabel_score(
                cos_sim.float(), neg_sim, 1.0 / self._scale(logit_scale),
                group_indices=self.group_indices)
        return ScorerOutput(vanilla, per_image=dict(
            embedding=image_embeds.detach().half()))

    def stream_info(self) -> dict:
        """The stream's settings, for the results JSON."""
        return dict(
            order='[OoD set, ID set] shuffled, memory reset per OoD set',
            stream_seed=self.stream_seed,
            id_ratio=self.id_ratio,
            stream_batch_size=self.stream_batch_size,
            proxy=self.proxy,
            score_mode=self.score_mode,
            lambda_vanilla=self.lambda_vanilla,
            memory_length=self.memory_length,
            fill_last_slot=self.fill_last_slot,
            entropy_precision=self.entropy_precision,
            thres=self.thres,
            gap=self.gap,
            beta=self.beta,
            ngroup=self.ngroup,
            num_negatives=self.num_negatives,
            logit_scale=self._scale() if (
                self.logit_scale is not None
                or self._seen_scale is not None) else None)

    def stream(self, embeds: torch.Tensor) -> Dict[str, torch.Tensor]:
        """:func:`~.functional.adaneg.adaneg_stream` of normalised
        embeddings ``(n, D)`` in stream order, on the scorer's device;
        returns ``dict(score, adaptive, vanilla)``, each ``(n,)`` on the
        CPU."""
        if self.text_embeds is None:
            raise RuntimeError('AdaNegScorer.prepare(context) must run '
                               'before scoring')
        device = self.text_embeds.device
        with torch.autocast(device.type, enabled=False):
            out = adaneg_stream(
                embeds.to(device).float(), self.text_embeds,
                self.text_embeds.shape[0] - self.num_negatives,
                logit_scale=self._scale(),
                group_indices=self.group_indices,
                batch_size=self.stream_batch_size,
                memory_length=self.memory_length,
                fill_last_slot=self.fill_last_slot,
                thres=self.thres,
                gap=self.gap,
                beta=self.beta,
                proxy=self.proxy,
                score_mode=self.score_mode,
                lambda_vanilla=self.lambda_vanilla,
                entropy_precision=self.entropy_precision)
        return {k: v.cpu() for k, v in out.items()}

    def score_streams(self, id_embeds: torch.Tensor,
                      ood_embeds: Mapping[str, torch.Tensor]
                      ) -> Dict[str, dict]:
        """Run one stream per OoD set (the published protocol).

        Args:
            id_embeds: ``(N_id, D)`` normalised embeddings of the ID set, in
                dataset order.
            ood_embeds: ``{set: (N_s, D)}`` of each OoD set.

        Returns:
            ``{set: dict(id_index, id_scores, ood_scores)}``: the ID images
            of the set's stream (indices into ``id_embeds``; all of them
            unless ``id_ratio``), their scores and the OoD set's scores, in
            dataset order (float64 numpy-ready CPU tensors).
        """
        out = {}
        for name, ood in ood_embeds.items():
            order, id_index = adaneg_stream_order(
                ood.shape[0], id_embeds.shape[0], self.stream_seed,
                self.id_ratio)
            pool = torch.cat([ood, id_embeds[id_index]])
            scores = torch.empty(pool.shape[0], dtype=torch.float64)
            scores[order] = self.stream(pool[order])['score'].double()
            out[name] = dict(id_index=id_index,
                             id_scores=scores[ood.shape[0]:],
                             ood_scores=scores[:ood.shape[0]])
            print_log(
                f'AdaNeg ({self.name}): stream over {name} '
                f'({ood.shape[0]} images) + {id_index.numel()} ID images, '
                f'seed {self.stream_seed}', logger='current')
        return out
