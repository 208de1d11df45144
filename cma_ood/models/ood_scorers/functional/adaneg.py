"""AdaNeg, test-time adaptive negative proxies (pure functions).

AdaNeg (Zhang & Zhang, NeurIPS 2024; ``YBZh/OpenOOD-VLM``
``openood/postprocessors/ttaprompt_postprocessor.py``
``TTAPromptPostprocessor_noadagap``, ``openood/networks/
clip_fixed_ood_prompt.py``) scores a *stream* of test images. Every label
-- the C ID classes, then K NegLabel-style negative labels -- owns a memory
slot holding its prompt embedding and up to ``capacity`` test images
written there during the stream. Per batch:

1. the vanilla score ``s_v``: NegLabel's grouped score of the images
   against the L = C + K prompt embeddings (it reads no memory);
2. the memory update (:func:`adaneg_candidates`,
   :func:`adaneg_memory_update`): images with ``s_v > thres + gap * (1 -
   thres)`` are written to the slot of their top ID class, images with
   ``s_v < thres - gap * thres`` to the slot of their top negative label;
   a full slot replaces its highest-entropy entry by a new one of lower
   entropy (the entropy of the softmax over the ID, resp. negative, logits);
3. the adaptive score ``s_a``: the same grouped score against the labels'
   proxies, read from the memory *after* this batch's writes (the batch's
   own images included): task-adaptive, the normalised mean of each slot
   (:func:`adaneg_task_proxies`), or sample-adaptive, each slot's entries
   weighted by ``exp(-beta * (1 - cos))`` to the image
   (:func:`adaneg_sample_cosines`);
4. the score ``s_a + lambda * s_v`` (:func:`adaneg_combine`).

:func:`adaneg_stream` runs this over embeddings in stream order;
:func:`adaneg_stream_order` draws the published protocol's order (one OoD
set followed by the ID set, shuffled with a seed; optionally a subsample
of the ID set). The negatives are selected by :func:`adaneg_pools` and
:func:`adaneg_select_negatives` (AdaNeg's rule, which differs from
NegLabel's: see there).

Published quirks, reproduced by default (docs/scorers_adaneg_glmcm.md):

* only ``memleng - 1`` image entries of a slot ever fill (the write index
  starts at 1, the prompt's slot 0, and a slot counts as full at index
  ``memleng``): ``capacity = memleng - 1`` unless ``fill_last_slot``;
* the published code runs in float16 (CLIP's fp16 weights): the softmax
  probabilities below 2**-25 round to 0 and ``-(p * log(p + 1e-8)).sum()``
  is NaN whenever one does (``0 * log(0)``). NaN compares false, so a full
  slot is then never replaced. ``entropy_precision='half'`` computes the
  entropy that way; ``'float'`` gives the finite float32 entropy of the
  documented rule.

Conventions: embeddings are L2-normalised rows; higher score = more
in-distribution; scores are float32.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...utils.checks import check_choice, check_matrix, check_positive_int
from .neglabel import label_affinity, neglabel_group_indices, neglabel_score

#: how the final score combines s_a and s_v (the published ``in_score``:
#: 'combine' = s_a + lambda * s_v, 'adaonly', 'vanillaonly', 'multiply')
SCORE_MODES = ('combine', 'adaptive', 'vanilla', 'multiply')
#: proxy kinds: task-adaptive (``samada=False``) or sample-adaptive
PROXIES = ('task', 'sample')
#: the precision of the memory's entropy priority (see the module doc)
ENTROPY_PRECISIONS = ('half', 'float')
#: the published entropy's guard, ``log(p + 1e-8)``
ENTROPY_EPS = 1e-8


# ------------------------------------------------------------- negatives
def adaneg_pools(noun_lists: Sequence[Sequence[str]],
                 adj_lists: Sequence[Sequence[str]],
                 classnames: Sequence[str]) -> Tuple[List[str], List[str]]:
    """AdaNeg's candidate pools (``clip_for_wordnet_prepare.py``).

    The nouns are the union of all noun files, the adjectives the union of
    all adjective files; words equal to an ID class name are removed from
    both, and adjectives that are also nouns from the adjectives ("remain
    the noun only"). Unlike NegLabel's loader there is no seen-set across
    noun and adjective files. The published pools are ``list(set(...))``
    (an order that changes with Python's string hashing); ours keep the
    order of first appearance over the given lists (deterministic).

    Args:
        noun_lists: the words of each noun file, in reading order.
        adj_lists: the words of each adjective file.
        classnames: the ID class names (matched exactly, case-sensitive).

    Returns:
        ``(nouns, adjectives)``, disjoint, without ID class names.
    """
    ids = set(classnames)

    def union(lists):
        seen, out = set(), []
        for words in lists:
            for word in words:
                if word and word not in seen:
                    seen.add(word)
                    out.append(word)
        return out

    nouns = [w for w in union(noun_lists) if w not in ids]
    noun_set = set(nouns)
    adjs = [w for w in union(adj_lists) if w not in ids and w not in noun_set]
    return nouns, adjs


def adaneg_negative_counts(num_nouns: int, num_adjs: int,
                           num_negatives: int = 10000) -> Tuple[int, int]:
    """How many adjectives and nouns AdaNeg keeps: the ``num_negatives``
    split in proportion to the pool sizes, ``n_adj = int(num_negatives *
    (num_adjs / (num_adjs + num_nouns)))``, ``n_noun = num_negatives -
    n_adj`` (``get_selected_ood_text_list``).

    Returns:
        ``(n_adj, n_noun)``.
    """
    check_positive_int(num_negatives, 'num_negatives')
    total = num_nouns + num_adjs
    if num_negatives > total:
        raise ValueError(
            f'num_negatives={num_negatives} exceeds the {total} candidate '
            f'labels ({num_nouns} nouns, {num_adjs} adjectives); lower '
            'num_negatives or use more candidate files')
    n_adj = int(num_negatives * (num_adjs / total))
    n_noun = num_negatives - n_adj
    if n_noun > num_nouns:  # only when num_negatives is about the total
        n_noun = num_nouns
        n_adj = num_negatives - n_noun
    return n_adj, n_noun


def adaneg_affinity(cand_feats: Tensor,
                    pos_feats: Tensor,
                    level: float = 0.95,
                    chunk_size: int = 4096) -> Tensor:
    """AdaNeg's affinity of each candidate to the ID labels: the
    ``int(C * level)``-th (0-based) of its C cosines to the ID prompts in
    ascending order (``value_cos.sort(1)[:, int(cate_num * 0.95)]``), not
    NegLabel's interpolated quantile. It is NegLabel's
    :func:`~.neglabel.label_affinity` at the quantile level ``k / (C - 1)``,
    ``k = int(C * level)``, whose linear interpolation then lands on the
    ``k``-th value (up to the float rounding of ``k / (C - 1) * (C - 1)``,
    i.e. within about 1e-4 of the gap to a neighbouring value).

    Args:
        cand_feats: ``(N, D)`` normalised candidate embeddings.
        pos_feats: ``(C, D)`` normalised ID prompt embeddings.
        level: the order statistic's level in [0, 1].
        chunk_size: candidate rows per step.

    Returns:
        ``(N,)`` affinities (float32, float64 for float64 inputs).
    """
    check_matrix(pos_feats, 'pos_feats', '(C, D)')
    if not 0.0 <= level <= 1.0:
        raise ValueError(f'level must be in [0, 1], got {level}')
    num_pos = pos_feats.shape[0]
    k = min(int(num_pos * level), num_pos - 1)
    quantile = k / (num_pos - 1) if num_pos > 1 else 0.0
    return label_affinity(cand_feats, pos_feats, quantile, chunk_size)


def adaneg_select_negatives(pos_feats: Tensor,
                            noun_feats: Tensor,
                            adj_feats: Tensor,
                            num_negatives: int = 10000,
                            level: float = 0.95,
                            chunk_size: int = 4096) -> Tuple[Tensor, Tensor]:
    """Select AdaNeg's negative labels.

    Affinities by :func:`adaneg_affinity`; the ``n_adj`` adjectives and
    ``n_noun`` nouns of lowest affinity (:func:`adaneg_negative_counts`)
    are kept, each by ascending affinity (ties by index).

    Args:
        pos_feats: ``(C, D)`` normalised ID prompt embeddings.
        noun_feats: ``(N, D)`` normalised noun prompt embeddings.
        adj_feats: ``(M, D)`` normalised adjective prompt embeddings.
        num_negatives: how many to keep (AdaNeg: 10,000).
        level: affinity level (AdaNeg: 0.95).
        chunk_size: candidate rows per affinity step.

    Returns:
        ``(adj_idx, noun_idx)`` int64 indices into ``adj_feats`` /
        ``noun_feats``; AdaNeg's label order is [ID, adjectives, nouns].
    """
    check_matrix(noun_feats, 'noun_feats', '(N, D)')
    check_matrix(adj_feats, 'adj_feats', '(M, D)')
    n_adj, n_noun = adaneg_negative_counts(noun_feats.shape[0],
                                           adj_feats.shape[0], num_negatives)

    def lowest(feats, keep):
        if keep == 0:
            return torch.zeros(0, dtype=torch.long, device=feats.device)
        aff = adaneg_affinity(feats, pos_feats, level, chunk_size)
        return torch.sort(aff, stable=True).indices[:keep]

    return lowest(adj_feats, n_adj), lowest(noun_feats, n_noun)


# ---------------------------------------------------------------- memory
class AdaNegMemory(NamedTuple):
    """The memory of all L labels.

    Attributes:
        text: ``(L, D)`` the labels' prompt embeddings (the published slot
            0, never replaced).
        feats: ``(L, K, D)`` image entries, zero where empty; ``K`` is the
            capacity (the published ``memleng - 1``, see the module doc).
        entropy: ``(L, K)`` the entries' priorities (may be NaN, see
            ``entropy_precision``; 0 where empty).
        count: ``(L,)`` int64 filled entries per label (entries
            ``0 .. count - 1``).
    """
    text: Tensor
    feats: Tensor
    entropy: Tensor
    count: Tensor


def adaneg_memory_init(text_embeds: Tensor, capacity: int) -> AdaNegMemory:
    """An empty memory: every label holds its prompt embedding only.

    Args:
        text_embeds: ``(L, D)`` normalised prompt embeddings of the labels
            (ID classes first).
        capacity: image entries per label (>= 1).
    """
    check_matrix(text_embeds, 'text_embeds', '(L, D)')
    check_positive_int(capacity, 'capacity')
    num, dim = text_embeds.shape
    dev = text_embeds.device
    text = text_embeds.float()
    return AdaNegMemory(
        text=text,
        feats=text.new_zeros(num, capacity, dim),
        entropy=text.new_zeros(num, capacity),
        count=torch.zeros(num, dtype=torch.long, device=dev))


def softmax_entropy(logits: Tensor, precision: str = 'float') -> Tensor:
    """The published priority ``-(p * log(p + 1e-8)).sum(-1)``,
    ``p = softmax(logits)``, per row.

    ``precision='float'``: in float32 (finite). ``'half'``: as the
    published float16 run computes it -- logits, softmax and entropy in
    float16, so the entropy is NaN whenever a probability rounds to 0.

    Returns:
        ``(B,)`` float32.
    """
    check_choice(precision, ENTROPY_PRECISIONS, 'entropy_precision')
    dtype = torch.float16 if precision == 'half' else torch.float32
    prob = torch.softmax(logits.to(dtype), dim=-1)
    return (-(prob * torch.log(prob + ENTROPY_EPS)).sum(dim=-1)).float()


def adaneg_thresholds(thres: float = 0.5,
                      gap: float = 0.5) -> Tuple[float, float]:
    """``(high, low)``: an image is written to its ID class's slot if
    ``s_v > high = thres + gap * (1 - thres)``, to its negative label's slot
    if ``s_v < low = thres - gap * thres`` (AdaNeg: 0.75 and 0.25)."""
    if not 0.0 <= thres <= 1.0 or not 0.0 <= gap <= 1.0:
        raise ValueError(
            f'thres and gap must lie in [0, 1], got {thres} and {gap}')
    return thres + gap * (1 - thres), thres - gap * thres


def adaneg_candidates(pos_sim: Tensor,
                      neg_sim: Tensor,
                      vanilla: Tensor,
                      logit_scale: float,
                      thres: float = 0.5,
                      gap: float = 0.5,
                      entropy_precision: str = 'half'
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    """The memory writes of one batch, in the published order.

    Args:
        pos_sim: ``(B, C)`` cosines of the batch to the ID prompts.
        neg_sim: ``(B, K)`` cosines to the negative prompts.
        vanilla: ``(B,)`` the batch's vanilla scores ``s_v``.
        logit_scale: the logit scale s (logits ``s * cos``; CLIP: 100).
        thres, gap: see :func:`adaneg_thresholds`.
        entropy_precision: see :func:`softmax_entropy`.

    Returns:
        ``(rows, labels, entropy)``: the batch rows written, the label
        (``0 .. C - 1`` ID, ``C + j`` negative ``j``) each goes to (the
        argmax ID class, resp. the argmax negative label) and its priority
        (the entropy of the softmax over the ID, resp. all K negative,
        logits). ID writes come first, each group in batch order, as the
        published loops run.
    """
    high, low = adaneg_thresholds(thres, gap)
    num_pos = pos_sim.shape[1]
    id_rows = torch.nonzero(vanilla > high).view(-1)
    neg_rows = torch.nonzero(vanilla < low).view(-1)
    pos, neg = pos_sim[id_rows], neg_sim[neg_rows]
    labels = torch.cat([pos.argmax(dim=1), neg.argmax(dim=1) + num_pos])
    entropy = torch.cat([
        softmax_entropy(logit_scale * pos, entropy_precision),
        softmax_entropy(logit_scale * neg, entropy_precision)
    ])
    return torch.cat([id_rows, neg_rows]), labels, entropy


def _replace_slot(entropy: Tensor) -> Tensor:
    """Per row, the entry a new one replaces: the last of an ascending
    sort (``torch.sort``: NaN last), ties to the highest slot."""
    key = torch.nan_to_num(entropy, nan=float('inf'))
    last = key.shape[1] - 1
    return last - key.flip(1).argmax(dim=1)


def adaneg_memory_update(memory: AdaNegMemory,
                         labels: Tensor,
                         entropy: Tensor,
                         feats: Tensor,
                         inplace: bool = False) -> AdaNegMemory:
    """Write a batch's candidates into the memory, in order.

    The published rule, for each candidate in order: if its label has
    fewer than ``K`` entries, it is appended; otherwise, if its entropy is
    lower than some entry's, it replaces the entry of highest entropy (NaN
    ranks highest, as in ``torch.sort``; ties: the highest slot). NaN
    never compares lower or higher (``current < e`` is false), exactly as
    in the published code. Labels are independent, so the candidates are
    processed in rounds: round ``r`` writes the ``r``-th candidate of every
    label at once.

    Args:
        memory: the memory.
        labels: ``(m,)`` int64 labels of the candidates, in arrival order.
        entropy: ``(m,)`` their priorities.
        feats: ``(m, D)`` their image embeddings.
        inplace: update ``memory``'s tensors in place (the stream does, on
            its own memory); otherwise they are copied first.

    Returns:
        The updated memory.
    """
    if not inplace:
        memory = AdaNegMemory(memory.text, memory.feats.clone(),
                              memory.entropy.clone(), memory.count.clone())
    if labels.numel() == 0:
        return memory
    capacity = memory.feats.shape[1]
    labels = labels.to(memory.count.device, torch.long)
    entropy = entropy.to(memory.entropy.device, memory.entropy.dtype)
    feats = feats.to(memory.feats.device, memory.feats.dtype)
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - \
        torch.repeat_interleave(starts, counts)
    for r in range(int(counts.max())):
        sel = torch.nonzero(rank == r).view(-1)
        lab, ent = labels[sel], entropy[sel]
        count = memory.count[lab]
        room = count < capacity
        old = memory.entropy[lab]  # (n, K)
        lower = (ent.unsqueeze(1) < old).any(dim=1)
        write = room | lower
        slot = torch.where(room, count, _replace_slot(old))
        lab, slot = lab[write], slot[write]
        memory.feats[lab, slot] = feats[sel[write]]
        memory.entropy[lab, slot] = ent[write]
        memory.count[lab] += room[write].long()
    return memory


# --------------------------------------------------------------- proxies
def adaneg_task_proxies(memory: AdaNegMemory) -> Tensor:
    """Task-adaptive proxies ``(L, D)``: the normalised mean of each slot
    (its prompt embedding and its ``K`` entries, empty ones zero), i.e.
    ``normalize(text + sum of entries)``."""
    return F.normalize(memory.text + memory.feats.sum(dim=1), dim=-1)


def adaneg_sample_proxies(memory: AdaNegMemory, x: Tensor,
                          beta: float = 5.0) -> Tensor:
    """Sample-adaptive proxies ``(B, L, D)`` (explicit; for small inputs):
    ``normalize(sum_j exp(-beta * (1 - cos(m_j, x))) * m_j)`` over the
    slot's prompt embedding and entries ``m_j`` (empty entries are zero
    and add nothing). :func:`adaneg_sample_cosines` gives ``x``'s cosines
    to them without materialising them."""
    slots = torch.cat([memory.text.unsqueeze(1), memory.feats], dim=1)
    sim = torch.einsum('lkd,bd->blk', slots, x.float())
    weight = torch.exp(-beta * (1 - sim))
    return F.normalize(torch.einsum('blk,lkd->bld', weight, slots), dim=-1)


def adaneg_sample_cosines(memory: AdaNegMemory, x: Tensor,
                          beta: float = 5.0) -> Tensor:
    """Cosines ``(B, L)`` of each image to its sample-adaptive proxies
    (:func:`adaneg_sample_proxies`), computed through each slot's Gram
    matrix: with slot vectors ``m_j``, cosines ``c_j = m_j . x`` and
    weights ``w_j = exp(-beta * (1 - c_j))``, the cosine is
    ``sum_j w_j c_j / sqrt(w^T G w)``, ``G = M M^T`` (the proxy's squared
    norm), so memory stays ``O(B * L * (K + 1))``."""
    slots = torch.cat([memory.text.unsqueeze(1), memory.feats], dim=1)
    num, width, dim = slots.shape
    sim = (x.float() @ slots.reshape(num * width, dim).T).view(
        -1, num, width)  # (B, L, K + 1)
    weight = torch.exp(-beta * (1 - sim))
    gram = slots @ slots.transpose(1, 2)  # (L, K + 1, K + 1)
    sq_norm = torch.einsum('blj,ljk,blk->bl', weight, gram, weight)
    return (weight * sim).sum(dim=2) / sq_norm.clamp_min(1e-24).sqrt()


def adaneg_combine(adaptive: Tensor, vanilla: Tensor,
                   mode: str = 'combine',
                   lambda_vanilla: float = 0.1) -> Tensor:
    """The final score from ``s_a`` and ``s_v`` (the published
    ``in_score``): ``'combine'`` ``s_a + lambda * s_v`` (AdaNeg),
    ``'adaptive'`` ``s_a``, ``'vanilla'`` ``s_v``, ``'multiply'``
    ``s_a * s_v``."""
    check_choice(mode, SCORE_MODES, 'score_mode')
    if mode == 'combine':
        return adaptive + lambda_vanilla * vanilla
    if mode == 'adaptive':
        return adaptive
    if mode == 'vanilla':
        return vanilla
    return adaptive * vanilla


# ---------------------------------------------------------------- stream
def adaneg_stream_order(num_ood: int,
                        num_id: int,
                        seed: int = 0,
                        id_ratio: Optional[float] = None
                        ) -> Tuple[Tensor, Tensor]:
    """The order of one published stream: the OoD set followed by the ID
    set (``ConcatDataset([ood, id])``), shuffled (``shuffle=True``); with
    ``id_ratio`` only ``min(num_id, round(id_ratio * num_ood))`` ID images,
    drawn without replacement, take part. A CPU ``torch.Generator`` seeded
    with ``seed`` draws the ID subset (if any), then the permutation; the
    published shuffle drew from the global RNG, whose state is not
    reproducible.

    Returns:
        ``(order, id_index)``: ``order`` ``(n,)`` int64 positions into the
        concatenation ``[OoD images 0 .. num_ood - 1, selected ID images]``,
        in stream order; ``id_index`` ``(k,)`` the selected ID images
        (ascending indices into the ID set).
    """
    if num_ood < 0 or num_id < 0:
        raise ValueError(f'set sizes must be >= 0, got {num_ood}, {num_id}')
    gen = torch.Generator(device='cpu')
    gen.manual_seed(int(seed))
    if id_ratio is None:
        id_index = torch.arange(num_id, dtype=torch.long)
    else:
        if not id_ratio > 0:
            raise ValueError(f'id_ratio must be > 0 or None, got {id_ratio}')
        keep = min(num_id, int(round(id_ratio * num_ood)))
        id_index = torch.randperm(num_id, generator=gen)[:keep].sort().values
    order = torch.randperm(num_ood + id_index.numel(), generator=gen)
    return order, id_index


def adaneg_stream(embeds: Tensor,
                  text_embeds: Tensor,
                  num_id: int,
                  logit_scale: float = 100.0,
                  group_indices: Optional[Tensor] = None,
                  ngroup: int = 5,
                  group_seed: int = 0,
                  batch_size: int = 256,
                  memory_length: int = 10,
                  fill_last_slot: bool = False,
                  thres: float = 0.5,
                  gap: float = 0.5,
                  beta: float = 5.0,
                  proxy: str = 'task',
                  score_mode: str = 'combine',
                  lambda_vanilla: float = 0.1,
                  entropy_precision: str = 'half') -> Dict[str, Tensor]:
    """AdaNeg's scores of one stream (see the module doc), batch by batch
    from an empty memory.

    Args:
        embeds: ``(n, D)`` normalised image embeddings in stream order.
        text_embeds: ``(L, D)`` normalised prompt embeddings, the ``num_id``
            ID classes first, then the negative labels.
        num_id: C, the number of ID classes.
        logit_scale: logits are ``logit_scale * cos`` (the softmax
            temperature of both scores and of the entropies).
        group_indices: ``(ngroup, K // ngroup)`` split of the negatives
            (:func:`~.neglabel.neglabel_group_indices`); by default that
            of ``ngroup`` and ``group_seed`` (AdaNeg: 5 groups, a CPU
            ``randperm`` after ``torch.manual_seed(0)``, the same split).
        batch_size: images per step (AdaNeg: 256; the memory changes
            between steps, so it changes the scores).
        memory_length: the published ``memleng`` (10).
        fill_last_slot: let all ``memory_length`` entries fill (the
            intended rule); ``False`` reproduces the published
            ``memory_length - 1``.
        thres, gap: the write thresholds (:func:`adaneg_thresholds`).
        beta: the sample-adaptive weights' sharpness (AdaNeg: ``int(5.5)
            = 5``).
        proxy: ``'task'`` or ``'sample'``-adaptive proxies.
        score_mode, lambda_vanilla: :func:`adaneg_combine`.
        entropy_precision: :func:`softmax_entropy` (``'half'``:
            published).

    Returns:
        ``dict(score=(n,), adaptive=(n,), vanilla=(n,))`` float32 on
        ``embeds``' device, in stream order.
    """
    check_matrix(embeds, 'embeds', '(n, D)')
    check_matrix(text_embeds, 'text_embeds', '(L, D)')
    if embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f'embeds and text_embeds must share D, got '
                         f'{embeds.shape[1]} and {text_embeds.shape[1]}')
    num_labels = text_embeds.shape[0]
    if not 1 <= num_id < num_labels:
        raise ValueError(f'num_id={num_id} must leave at least one negative '
                         f'label among the {num_labels} prompts')
    check_positive_int(batch_size, 'batch_size')
    check_positive_int(memory_length, 'memory_length')
    check_choice(proxy, PROXIES, 'proxy')
    check_choice(score_mode, SCORE_MODES, 'score_mode')
    capacity = memory_length if fill_last_slot else memory_length - 1
    if capacity < 1:
        raise ValueError(f'memory_length={memory_length} leaves no image '
                         'entry (the published rule fills memory_length - '
                         '1); use memory_length >= 2 or fill_last_slot')
    if group_indices is None:
        group_indices = neglabel_group_indices(num_labels - num_id, ngroup,
                                               group_seed)
    device = embeds.device
    group_indices = group_indices.to(device)
    text = text_embeds.to(device).float()
    temperature = 1.0 / float(logit_scale)
    memory = adaneg_memory_init(text, capacity)
    out = {k: [] for k in ('score', 'adaptive', 'vanilla')}
    for start in range(0, embeds.shape[0], batch_size):
        x = embeds[start:start + batch_size].float()
        sim = x @ text.T
        pos, neg = sim[:, :num_id], sim[:, num_id:]
        vanilla = neglabel_score(pos, neg, temperature,
                                 group_indices=group_indices)
        rows, labels, entropy = adaneg_candidates(
            pos, neg, vanilla, float(logit_scale), thres, gap,
            entropy_precision)
        memory = adaneg_memory_update(memory, labels, entropy, x[rows],
                                      inplace=True)
        if proxy == 'task':
            ada = x @ adaneg_task_proxies(memory).T
        else:
            ada = adaneg_sample_cosines(memory, x, beta)
        adaptive = neglabel_score(ada[:, :num_id], ada[:, num_id:],
                                  temperature, group_indices=group_indices)
        out['score'].append(
            adaneg_combine(adaptive, vanilla, score_mode, lambda_vanilla))
        out['adaptive'].append(adaptive)
        out['vanilla'].append(vanilla)
    if not out['score']:
        empty = embeds.new_zeros(0)
        return dict(score=empty, adaptive=empty, vanilla=empty)
    return {k: torch.cat(v).float() for k, v in out.items()}
