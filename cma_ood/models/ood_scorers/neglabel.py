"""NegLabel (ICLR 2024) as a registered OoD scorer with a mining cache.

:class:`NegLabelScorer` reads NegLabel's WordNet candidate labels
(``txtfiles/<lexname>.txt``, :mod:`cma_ood.datasets.neglabel_candidates`),
encodes them with the model's text tower (through its
:class:`~.base.ScorerContext`), keeps the least ID-like ones
(:func:`~.functional.neglabel.mine_negative_labels`) and scores images with
:func:`~.functional.neglabel.neglabel_score`.

Mining encodes ~70,000 prompts, so its result (the negative-label
embeddings and their labels) is cached on disk under a key that covers
everything it depends on: the text-tower weights, the ID class names and
test template (they define the ID prompt embeddings), the candidate lists,
the prompt templates, ``percentile``, ``ratio`` and a format version.

Options shared with :class:`~.csp.CSPScorer` (which subclasses this one):
``seed_repeats`` / ``seeds`` add the score under other seeds' group splits
as variants ``'@seed=<s>'`` of a :class:`~.base.ScorerOutput`, and
``top_negatives`` adds each image's most similar negative labels
(``per_image['top_negatives']``).
"""
import hashlib
import json
import logging
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import broadcast_object_list, get_dist_info
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ...datasets.neglabel_candidates import (ADJ, NOUN, PROMPT,
                                             default_txt_dir, lexname_kind,
                                             read_candidates, read_label_file,
                                             write_label_file)
from ...datasets.wordnet import DEFAULT_LEXNAMES
from ...utils.cache import default_cache_dir, mark_used, prune_cache
from ...utils.checkpoint import atomic_torch_save
from ..utils.prompts import check_template
from .base import BaseOoDScorer, ScorerContext, ScorerOutput
from .functional.csp import ensemble_embeddings
from .functional.neglabel import (mine_negative_labels,
                                  neglabel_group_indices,
                                  neglabel_score, neglabel_seed_group_indices,
                                  neglabel_seed_scores, top_negative_indices)

#: bumped whenever the cache content or the mining rule changes
CACHE_FORMAT_VERSION = 1
#: files of the cache directory that count towards ``cache_max_bytes``
CACHE_PATTERNS = ('neglabel_*.pt', 'tokens-*.pt')
#: kind of the ID class names among the labels encoded together with the
#: candidates (scorers with their own ID prompt ensemble); never in files
_ID = 'i'


def resolve_repeat_seeds(seed: int, seed_repeats: int,
                         seeds: Optional[Sequence[int]]) -> List[int]:
    """The seeds of the repeats: ``seeds`` if given, else the
    ``seed_repeats`` smallest non-negative ints other than ``seed``.

    Raises:
        ValueError: naming the bad option (a negative count, a non-int or
            repeated seed, ``seed`` itself among ``seeds``, or a count
            that disagrees with ``len(seeds)``).
    """
    if isinstance(seed_repeats, bool) or not isinstance(seed_repeats, int) \
            or seed_repeats < 0:
        raise ValueError(
            f'seed_repeats must be an int >= 0, got {seed_repeats!r}')
    if seeds is None:
        out, cand = [], 0
        while len(out) < seed_repeats:
            if cand != seed:
                out.append(cand)
            cand += 1
        return out
    seeds = list(seeds)
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f'seeds must be ints, got {seeds!r}')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds must not repeat, got {seeds!r}')
    if seed in seeds:
        raise ValueError(
            f'seeds must not contain the main seed={seed} (its score is the '
            f'main score), got {seeds!r}')
    if seed_repeats not in (0, len(seeds)):
        raise ValueError(
            f'seed_repeats={seed_repeats} disagrees with seeds={seeds!r}; '
            'give one of them')
    return seeds


@MODELS.register_module()
class NegLabelScorer(BaseOoDScorer):
    """NegLabel score with negative labels mined from WordNet.

    :meth:`prepare` (called by the classifier before the first scored
    batch after each weight change) builds the negative labels: nouns are
    prompted with ``noun_template``, adjectives with ``adj_template``, all
    are encoded by the classifier's text tower, and
    :func:`mine_negative_labels` keeps the ``ratio`` least ID-like labels of
    each pool (affinity = ``percentile``-quantile of the cosine
    similarities to the ID prompts). The kept labels (nouns, then
    adjectives, each by ascending affinity) are split once into
    ``ngroup`` seeded groups; :meth:`forward` returns
    :func:`neglabel_score` (higher = more in-distribution), as a
    :class:`~.base.ScorerOutput` when seed repeats or top negatives are
    asked for (a plain ``(B,)`` tensor otherwise).

    Args:
        txt_dir (str, optional): directory of ``<lexname>.txt`` candidate
            lists; defaults to the lists shipped with cma_ood
            (:func:`default_txt_dir`).
        lexnames (Sequence[str]): candidate files, ``noun.*`` and
            ``adj.*``; defaults to NegLabel's 24 noun and 3 adjective files.
        noun_template (str): prompt of noun candidates.
        adj_template (str): prompt of adjective candidates.
        percentile (float): affinity quantile level (NegLabel: 0.95).
        ratio (float): fraction of each pool kept (NegLabel: 0.15).
        temperature (float): tau of the score (NegLabel: 0.01).
        ngroup (int): number of groups the score is averaged over
            (NegLabel: 100); must not exceed the number of negatives.
        seed (int): seed of the group split (the main score's).
        seed_repeats (int): also score with this many other seeds' group
            splits (the smallest non-negative ints other than ``seed``),
            returned as variants ``'@seed=<s>'`` (``ood_scores[name +
            '@seed=<s>']``); 0 (default): off. Needs ``ngroup > 1`` (one
            group is not shuffled). Costs one more grouped score per seed
            and image (the similarities are shared).
        seeds (Sequence[int], optional): the repeat seeds explicitly
            (instead of ``seed_repeats``); must not contain ``seed``.
        top_negatives (int): per image, the labels (words, phrases or
            prompts as mined / read, not the templated prompts) of the
            ``top_negatives`` most similar negative labels, most similar
            first, as ``per_image['top_negatives']`` (``ood_details[name]
            ['top_negatives']``); 0: off. Default 5: a top-k over the K
            negatives per image and one host copy of the ``(B, k)``
            indices per batch.
        cache_dir (str | bool, optional): where mined negatives are cached;
            ``None``: ``$CMA_OOD_CACHE/neglabel`` or
            ``~/.cache/cma_ood/neglabel``; ``False``: no cache.
        neg_labels_file (str, optional): use the negative labels of this
            file (see :func:`read_label_file`; e.g. one written by
            ``dump_labels``) instead of mining them. Their order is kept,
            so the group split matches the run that dumped them. A
            ``.npy`` array of prompt strings (CMA's
            ``neg_label_10000.npy``) is encoded verbatim, prompt by prompt,
            by the classifier's text tower: CMA's evaluation protocol
            (with ``ngroup=1``: one softmax over all of them).
        dump_labels (str, optional): write the negative labels in use to
            this file, one ``n|a|p<TAB>label`` per line (main process
            only).
        batch_size (int): prompts tokenised and encoded per step.
        show_progress (bool): progress bar while encoding (main process).
        cache_max_bytes (int): bound of the cache directory's NegLabel files
            (mined negatives and token ids); after each write the least
            recently used files are evicted until the rest fits (default
            1 GiB, about 50 ViT-B/16 entries). Superseded weights (e.g. the
            checkpoints of a training run) therefore never pile up.
        at_validation (bool): also score during validation in training
            (mining again after every training epoch); off by default, so
            validation reports the cheap scores only.
        name (str, optional): results key; ``'NegLabel'`` by default.
    """
    default_name = 'NegLabel'
    #: the log messages' prefix
    log_name = 'NegLabel'
    #: cache file prefix and default cache folder (``~/.cache/cma_ood/...``)
    cache_prefix = 'neglabel'
    #: what the second candidate pool holds (log messages)
    second_pool_name = 'adjective'

    def __init__(self,
                 txt_dir: Optional[str] = None,
                 lexnames: Sequence[str] = DEFAULT_LEXNAMES,
                 noun_template: str = 'the nice {}',
                 adj_template: str = 'This is a {} photo',
                 percentile: float = 0.95,
                 ratio: float = 0.15,
                 temperature: float = 0.01,
                 ngroup: int = 100,
                 seed: int = 0,
                 seed_repeats: int = 0,
                 seeds: Optional[Sequence[int]] = None,
                 top_negatives: int = 5,
                 cache_dir: Union[None, str, bool] = None,
                 neg_labels_file: Optional[str] = None,
                 dump_labels: Optional[str] = None,
                 batch_size: int = 1024,
                 show_progress: bool = True,
                 cache_max_bytes: int = 2**30,
                 at_validation: bool = False,
                 name: Optional[str] = None):
        super().__init__(name, at_validation=at_validation)
        self.txt_dir = txt_dir
        self.lexnames = tuple(lexnames)
        if not self.lexnames and neg_labels_file is None:
            raise ValueError('lexnames is empty')
        for lexname in self.lexnames:
            lexname_kind(lexname)
        self.noun_template = check_template(noun_template, 'noun_template')
        self.adj_template = check_template(adj_template, 'adj_template')
        if not 0.0 <= percentile <= 1.0:
            raise ValueError(f'percentile must be in [0, 1], got {percentile}')
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f'ratio must be in (0, 1], got {ratio}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if isinstance(ngroup, bool) or not isinstance(ngroup, int) \
                or ngroup < 1:
            raise ValueError(f'ngroup must be a positive int, got {ngroup!r}')
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or batch_size < 1:
            raise ValueError(
                f'batch_size must be a positive int, got {batch_size!r}')
        self.repeat_seeds = resolve_repeat_seeds(seed, seed_repeats, seeds)
        if self.repeat_seeds and ngroup == 1:
            raise ValueError(
                'seed_repeats / seeds need ngroup > 1: with one group the '
                'negatives are not shuffled, so every seed gives the same '
                'score')
        if isinstance(top_negatives, bool) or not isinstance(
                top_negatives, int) or top_negatives < 0:
            raise ValueError('top_negatives must be an int >= 0, got '
                             f'{top_negatives!r}')
        self.top_negatives = top_negatives
        #: CSP's exclusion of candidates too close to an ID label (off)
        self.max_cos: Optional[float] = None
        if cache_dir is True:
            cache_dir = None
        self.percentile = float(percentile)
        self.ratio = float(ratio)
        self.temperature = float(temperature)
        self.ngroup = ngroup
        self.seed = seed
        self.cache_dir = cache_dir
        self.neg_labels_file = neg_labels_file
        self.dump_labels = dump_labels
        self.batch_size = batch_size
        self.show_progress = show_progress
        if isinstance(cache_max_bytes, bool) or not isinstance(
                cache_max_bytes, int) or cache_max_bytes < 0:
            raise ValueError('cache_max_bytes must be an int >= 0, got '
                             f'{cache_max_bytes!r}')
        self.cache_max_bytes = cache_max_bytes
        self.neg_labels: Optional[List[str]] = None
        self.neg_kinds: Optional[List[str]] = None
        self.cache_file: Optional[Path] = None
        # derived from the weights: rebuilt by prepare(), never checkpointed
        self.register_buffer('neg_embeds', None, persistent=False)
        self.register_buffer('group_indices', None, persistent=False)
        # (S, G, K // G) splits of the repeat seeds
        self.register_buffer('repeat_group_indices', None, persistent=False)
        # the scorer's own ID label embeddings (CSP's ensemble); None: the
        # classifier's ID prompts (the cosines forward() is given)
        self.register_buffer('id_embeds', None, persistent=False)

    # ------------------------------------------------------------ helpers
    @property
    def num_negatives(self) -> int:
        return 0 if self.neg_labels is None else len(self.neg_labels)

    def resolved_txt_dir(self) -> Path:
        if self.txt_dir is None:
            return default_txt_dir()
        return Path(osp.expanduser(str(self.txt_dir)))

    def resolved_cache_dir(self) -> Optional[Path]:
        """The cache directory, or ``None`` when caching is disabled."""
        if self.cache_dir is False:
            return None
        if self.cache_dir is None:
            return default_cache_dir(self.cache_prefix)
        return Path(osp.expanduser(str(self.cache_dir)))

    def read_candidates(self) -> Tuple[List[str], List[str]]:
        """``(nouns, adjectives)`` of :func:`read_candidates`."""
        return read_candidates(self.resolved_txt_dir(), self.lexnames)

    def templates_for(self, kind: str) -> Tuple[str, ...]:
        """The prompt templates of a label kind: one per kind for NegLabel
        (noun / adjective template; a full prompt is used verbatim);
        several make an ensemble (:class:`~.csp.CSPScorer`)."""
        return {NOUN: (self.noun_template, ), ADJ: (self.adj_template, ),
                PROMPT: ('{}', )}[kind]

    @property
    def has_own_id_embeds(self) -> bool:
        """Whether the scorer embeds the ID classes itself (an ensemble)
        instead of using the classifier's ID prompts."""
        return False

    def candidate_pools(self, nouns: Sequence[str], adjs: Sequence[str]
                        ) -> Tuple[List[str], List[str]]:
        """The two candidate pools mined separately: NegLabel's nouns and
        adjectives (CSP: nouns and conjugated phrases)."""
        return list(nouns), list(adjs)

    def prompts(self, labels: Sequence[str],
                kinds: Sequence[str]) -> List[str]:
        """The prompts of the labels, label-major: each label's kind's
        templates in turn (NegLabel: one prompt per label)."""
        return [
            template.format(lab) for lab, k in zip(labels, kinds)
            for template in self.templates_for(k)
        ]

    def encode_labels(self, context: ScorerContext, labels: Sequence[str],
                      kinds: Sequence[str]) -> torch.Tensor:
        """Unit-norm fp32 embeddings ``(N, D)`` of labels: of their prompt
        when each kind has one template, else the normalised mean of
        their prompts' raw embeddings (:func:`ensemble_embeddings`); all
        prompts go through one :meth:`encode` call."""
        counts = [len(self.templates_for(k)) for k in kinds]
        prompts = self.prompts(labels, kinds)
        if all(c == 1 for c in counts):
            return self.encode(context, prompts)
        raw = self.encode(context, prompts, normalize=False)
        return ensemble_embeddings(raw, counts)

    def cache_meta(self, context: ScorerContext, nouns: Sequence[str],
                   adjs: Sequence[str]) -> dict:
        """Everything the mined negatives depend on (hashed by
        :meth:`cache_key`)."""
        return dict(
            format=CACHE_FORMAT_VERSION,
            id_classnames=list(context.classnames),
            id_template=context.test_template,
            context_length=int(context.context_length),
            noun_template=self.noun_template,
            adj_template=self.adj_template,
            percentile=self.percentile,
            ratio=self.ratio,
            nouns=list(nouns),
            adjectives=list(adjs),
            text_tower=context.text_fingerprint())

    def cache_key(self, context: ScorerContext, nouns: Sequence[str],
                  adjs: Sequence[str]) -> str:
        """sha256 of everything the mined negatives depend on."""
        hasher = hashlib.sha256()
        meta = self.cache_meta(context, nouns, adjs)
        hasher.update(json.dumps(meta, ensure_ascii=False).encode('utf-8'))
        return hasher.hexdigest()

    def _prune_cache(self, keep: Path) -> None:
        """Evict least recently used cache files beyond
        ``cache_max_bytes``, keeping ``keep``."""
        patterns = (f'{self.cache_prefix}_*.pt', ) + CACHE_PATTERNS[1:]
        prune_cache(keep.parent, patterns, self.cache_max_bytes,
                    keep=[keep])

    def encode(self, context: ScorerContext, prompts: Sequence[str],
               normalize: bool = True) -> torch.Tensor:
        """Normalised (``normalize=False``: raw) fp32 embeddings ``(N, D)``
        of ``prompts``, encoded ``batch_size`` at a time (sorted by
        length) with a progress bar; token ids are cached next to the
        mined negatives."""
        if not prompts:
            return torch.empty(0, context.embed_dim, device=context.device)
        rank, _ = get_dist_info()
        kwargs = {} if normalize else dict(normalize=False)
        return context.encode_text(
            list(prompts),
            batch_size=self.batch_size,
            progress=self.show_progress and rank == 0,
            token_cache_dir=self.resolved_cache_dir(), **kwargs).float()

    def _encode_with_id(self, context: ScorerContext, labels: Sequence[str],
                        kinds: Sequence[str]
                        ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """``(id_embeds, label_embeds)``: with :attr:`has_own_id_embeds`
        the ID class names are encoded in the same call (``id_embeds``
        ``(C, D)``), else ``id_embeds`` is ``None``."""
        if not self.has_own_id_embeds:
            return None, self.encode_labels(context, labels, kinds)
        names = list(context.classnames)
        feats = self.encode_labels(context, names + list(labels),
                                   [_ID] * len(names) + list(kinds))
        return feats[:len(names)], feats[len(names):]

    # ------------------------------------------------------------- mining
    def mine(self, context: ScorerContext, nouns: Sequence[str],
             adjs: Sequence[str]) -> dict:
        """Encode the candidates and keep the negative labels."""
        nouns, adjs = self.candidate_pools(nouns, adjs)
        kinds = [NOUN] * len(nouns) + [ADJ] * len(adjs)
        num_prompts = len(self.prompts(nouns + adjs, kinds))
        print_log(
            f'{self.log_name}: encoding {len(nouns)} noun and {len(adjs)} '
            f'{self.second_pool_name} candidate labels ({num_prompts} '
            'prompts)', logger='current')
        id_embeds, feats = self._encode_with_id(context, nouns + adjs, kinds)
        noun_feats, adj_feats = feats[:len(nouns)], feats[len(nouns):]
        pos_feats = (context.class_embeddings()
                     if id_embeds is None else id_embeds).float()
        noun_idx, adj_idx = mine_negative_labels(
            pos_feats, noun_feats, adj_feats, self.percentile, self.ratio,
            max_cos=self.max_cos)
        noun_idx, adj_idx = noun_idx.cpu(), adj_idx.cpu()
        labels = [nouns[i] for i in noun_idx.tolist()] + \
                 [adjs[i] for i in adj_idx.tolist()]
        embeds = torch.cat([
            noun_feats[noun_idx.to(noun_feats.device)],
            adj_feats[adj_idx.to(adj_feats.device)]
        ])
        print_log(
            f'{self.log_name}: mined {len(labels)} negative labels '
            f'({len(noun_idx)} of {len(nouns)} nouns, {len(adj_idx)} of '
            f'{len(adjs)} {self.second_pool_name}s; percentile '
            f'{self.percentile}, ratio {self.ratio})', logger='current')
        result = dict(
            labels=labels,
            kinds=[NOUN] * len(noun_idx) + [ADJ] * len(adj_idx),
            embeds=embeds)
        if id_embeds is not None:
            result['id_embeds'] = id_embeds
        return result

    def _load_cache(self, path: Path, key: str) -> Optional[dict]:
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location='cpu', weights_only=True)
            ok = (isinstance(data, dict)
                  and data.get('format') == CACHE_FORMAT_VERSION
                  and data.get('key') == key
                  and isinstance(data.get('embeds'), torch.Tensor)
                  and data['embeds'].dim() == 2
                  and len(data['labels']) == len(data['kinds']) ==
                  data['embeds'].shape[0])
            if ok and self.has_own_id_embeds:
                ids = data.get('id_embeds')
                ok = (isinstance(ids, torch.Tensor) and ids.dim() == 2
                      and ids.shape[1] == data['embeds'].shape[1])
        except Exception as err:  # corrupt or foreign file: mine again
            print_log(
                f'{self.log_name}: ignoring unreadable cache {path}: '
                f'{err!r}', logger='current', level=logging.WARNING)
            return None
        if not ok:
            print_log(f'{self.log_name}: ignoring mismatching cache {path}',
                      logger='current', level=logging.WARNING)
            return None
        print_log(
            f'{self.log_name}: loaded {len(data["labels"])} negative labels '
            f'from cache {path}', logger='current')
        mark_used(path)
        return data

    def _save_cache(self, path: Path, key: str, result: dict) -> None:
        data = dict(
            format=CACHE_FORMAT_VERSION,
            key=key,
            labels=list(result['labels']),
            kinds=list(result['kinds']),
            embeds=result['embeds'].detach().float().cpu().contiguous())
        if result.get('id_embeds') is not None:
            data['id_embeds'] = result['id_embeds'].detach().float().cpu(
            ).contiguous()
        try:
            atomic_torch_save(data, str(path))
        except OSError as err:
            print_log(
                f'{self.log_name}: could not write cache {path}: {err!r}',
                logger='current', level=logging.WARNING)
            return
        print_log(
            f'{self.log_name}: cached {len(data["labels"])} negative labels '
            f'in {path}', logger='current')
        self._prune_cache(path)

    def _load_or_mine(self, context, nouns, adjs, path: Optional[Path],
                      key: Optional[str]) -> dict:
        if path is not None:
            cached = self._load_cache(path, key)
            if cached is not None:
                return cached
        result = self.mine(context, nouns, adjs)
        if path is not None:
            self._save_cache(path, key, result)
        return result

    def negatives_for(self, context: ScorerContext) -> dict:
        """Mined (or cached) negatives: ``dict(labels, kinds, embeds)``.

        Under an initialised process group with caching on, rank 0 loads
        or mines and saves while the other ranks wait, then they read the
        cache (mining themselves if they cannot see the file, e.g. a
        node-local cache dir); an error on rank 0 is reported on every
        rank. Without a cache every rank mines.
        """
        nouns, adjs = self.read_candidates()
        cache_dir = self.resolved_cache_dir()
        if cache_dir is None:
            self.cache_file = None
            return self.mine(context, nouns, adjs)
        key = self.cache_key(context, nouns, adjs)
        path = cache_dir / f'{self.cache_prefix}_{key}.pt'
        self.cache_file = path
        rank, world_size = get_dist_info()
        if world_size == 1:
            return self._load_or_mine(context, nouns, adjs, path, key)
        if rank == 0:
            try:
                result = self._load_or_mine(context, nouns, adjs, path, key)
            except Exception as err:
                broadcast_object_list([f'{type(err).__name__}: {err}'])
                raise
            broadcast_object_list([None])  # also the barrier
            return result
        status = [None]
        broadcast_object_list(status)
        if status[0] is not None:
            raise RuntimeError(
                f'{self.log_name}: mining failed on rank 0: {status[0]}')
        result = self._load_cache(path, key)
        if result is None:
            print_log(
                f'{self.log_name}: rank {rank} cannot read the cache {path} '
                'written by rank 0; mining here', logger='current',
                level=logging.WARNING)
            result = self.mine(context, nouns, adjs)
        return result

    # ------------------------------------------------------------ scoring
    def prepare(self, context: ScorerContext) -> None:
        """Build the negative labels for the model's current weights
        (mined, cached or read from ``neg_labels_file``)."""
        if context.classnames is None:
            raise RuntimeError(f'{type(self).__name__} needs the ID class '
                               'names (model.classnames)')
        if self.neg_labels_file is not None:
            labels, kinds = read_label_file(
                osp.expanduser(str(self.neg_labels_file)))
            print_log(
                f'{self.log_name}: encoding {len(labels)} negative labels '
                f'from {self.neg_labels_file}', logger='current')
            id_embeds, embeds = self._encode_with_id(context, labels, kinds)
            result = dict(labels=labels, kinds=kinds, embeds=embeds,
                          id_embeds=id_embeds)
        else:
            result = self.negatives_for(context)
        num_neg = len(result['labels'])
        if self.ngroup > num_neg:
            raise ValueError(
                f'{self.log_name}: ngroup={self.ngroup} exceeds the number of '
                f'negative labels ({num_neg}); lower ngroup, raise ratio '
                f'(now {self.ratio}) or use more candidate labels')
        device = context.device
        self.neg_labels = list(result['labels'])
        self.neg_kinds = list(result['kinds'])
        self.neg_embeds = result['embeds'].to(device=device,
                                              dtype=torch.float32)
        self.group_indices = neglabel_group_indices(
            num_neg, self.ngroup, self.seed).to(device)
        self.repeat_group_indices = neglabel_seed_group_indices(
            num_neg, self.ngroup, self.repeat_seeds).to(device) \
            if self.repeat_seeds else None
        ids = result.get('id_embeds')
        self.id_embeds = None if ids is None else ids.to(
            device=device, dtype=torch.float32)
        if self.dump_labels is not None and get_dist_info()[0] == 0:
            write_label_file(self.dump_labels, self.neg_labels,
                             self.neg_kinds)
            print_log(
                f'{self.log_name}: wrote {num_neg} negative labels to '
                f'{self.dump_labels}', logger='current')

    def forward(self, image_embeds: torch.Tensor, cos_sim: torch.Tensor,
                logit_scale: torch.Tensor
                ) -> Union[torch.Tensor, ScorerOutput]:
        if self.neg_embeds is None:
            raise RuntimeError(f'{type(self).__name__}.prepare(context) must '
                               'run before scoring')
        # fp32 similarities even under autocast: tau = 0.01 amplifies
        # half-precision rounding 100 times
        with torch.autocast(image_embeds.device.type, enabled=False):
            image = image_embeds.float()
            neg_sim = image @ self.neg_embeds.to(image.device).T
            pos_sim = cos_sim.float() if self.id_embeds is None else \
                image @ self.id_embeds.to(image.device).T
            score = neglabel_score(
                pos_sim,
                neg_sim,
                self.temperature,
                ngroup=self.ngroup,
                group_indices=self.group_indices)
            variants: Dict[str, torch.Tensor] = {}
            if self.repeat_seeds:
                repeats = neglabel_seed_scores(pos_sim, neg_sim,
                                               self.repeat_group_indices,
                                               self.temperature)
                variants = {
                    f'@seed={s}': row
                    for s, row in zip(self.repeat_seeds, repeats)
                }
            per_image = {}
            if self.top_negatives:
                top = top_negative_indices(neg_sim, self.top_negatives)
                labels = self.neg_labels
                per_image['top_negatives'] = [
                    [labels[j] for j in row] for row in top.tolist()
                ]
        if not variants and not per_image:
            return score
        return ScorerOutput(score, variants, per_image)
