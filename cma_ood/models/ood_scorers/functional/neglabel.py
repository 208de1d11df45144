"""NegLabel: negative-label mining and the NegLabel OoD score.

Functional core (pure functions, no module state). Higher score = more
in-distribution everywhere.

- :func:`label_affinity` / :func:`mine_negative_labels` pick, among candidate
  label embeddings, those least similar to the ID label embeddings (with
  CSP's ``max_cos`` exclusion as an option).
- :func:`neglabel_group_indices` fixes the (seeded) split of the negative
  labels into groups once; :func:`neglabel_score` is the softmax mass on the
  ID labels over [ID labels, negative labels], averaged over the groups;
  :func:`neglabel_seed_scores` evaluates it for several seeds' splits at
  once (seed repeats).
- :func:`top_negative_indices`: the negative labels each image is most
  similar to (diagnostics).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...utils.checks import check_matrix

#: Older torch releases refuse torch.quantile inputs larger than this; the
#: chunk is kept under it whatever the torch version.
_QUANTILE_MAX_NUMEL = 2**24


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half is upcast)."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def label_affinity(cand_feats: Tensor,
                   pos_feats: Tensor,
                   percentile: float = 0.95,
                   chunk_size: int = 4096,
                   max_cos: Optional[float] = None) -> Tensor:
    """Affinity of each candidate label to the ID labels.

    ``affinity[n] = quantile(cand_feats[n] @ pos_feats.T, percentile)`` with
    torch.quantile's default linear interpolation over the C similarities.
    With ``max_cos`` (CSP: 0.95), a candidate whose largest similarity to
    any ID label exceeds it (strictly) gets affinity 1.0 instead, which
    ranks it among the most ID-like (CSP's ``sim[maximum > 0.95] = 1.0``).

    Rows are processed ``chunk_size`` at a time (fewer if C is so large that
    a chunk would exceed 2**24 elements, the torch.quantile input limit of
    older torch releases), so memory is O(chunk_size * C) whatever the
    number of candidates.

    Args:
        cand_feats: (N, D) L2-normalised candidate embeddings.
        pos_feats: (C, D) L2-normalised ID label embeddings, C >= 1, on the
            same device as ``cand_feats``.
        percentile: quantile level in [0, 1].
        chunk_size: candidate rows per chunk, >= 1.
        max_cos: optional exclusion threshold (``None``: off, NegLabel).

    Returns:
        (N,) affinities on the inputs' device, float64 if either input is
        float64, else float32 (half inputs are upcast before the matmul).
    """
    check_matrix(cand_feats, 'cand_feats', '(num_labels, D)')
    check_matrix(pos_feats, 'pos_feats', '(num_labels, D)')
    if pos_feats.shape[0] == 0:
        raise ValueError('pos_feats must hold at least one ID label')
    if cand_feats.shape[1] != pos_feats.shape[1]:
        raise ValueError(
            'cand_feats and pos_feats must share the embedding dim D, got '
            f'{cand_feats.shape[1]} and {pos_feats.shape[1]}')
    if cand_feats.device != pos_feats.device:
        raise ValueError(
            'cand_feats and pos_feats must be on the same device, got '
            f'{cand_feats.device} and {pos_feats.device}')
    if not 0.0 <= percentile <= 1.0:
        raise ValueError(f'percentile must be in [0, 1], got {percentile}')
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) \
            or chunk_size < 1:
        raise ValueError(
            f'chunk_size must be a positive int, got {chunk_size!r}')

    dtype = _compute_dtype(cand_feats, pos_feats)
    pos_t = pos_feats.to(dtype).T  # (D, C)
    num_pos = pos_t.shape[1]
    rows = max(1, min(chunk_size, _QUANTILE_MAX_NUMEL // num_pos))
    out = torch.empty(
        cand_feats.shape[0], dtype=dtype, device=cand_feats.device)
    # exact similarities even inside an autocast region (ranking by a
    # quantile is sensitive to bf16/fp16 rounding)
    with torch.autocast(cand_feats.device.type, enabled=False):
        for start in range(0, cand_feats.shape[0], rows):
            sim = cand_feats[start:start + rows].to(dtype) @ pos_t
            aff = torch.quantile(sim, percentile, dim=1)
            if max_cos is not None:
                aff = aff.masked_fill(sim.amax(dim=1) > max_cos, 1.0)
            out[start:start + rows] = aff
    return out


def _lowest_affinity(affinity: Tensor, ratio: float) -> Tensor:
    """Indices of the first ``int(len * ratio)`` entries by ascending value.

    Ties are broken by index (stable sort).
    """
    keep = int(affinity.shape[0] * ratio)
    order = torch.sort(affinity, stable=True).indices
    return order[:keep]


def mine_negative_labels(pos_feats: Tensor,
                         noun_feats: Tensor,
                         adj_feats: Tensor,
                         percentile: float = 0.95,
                         ratio: float = 0.15,
                         chunk_size: int = 4096,
                         max_cos: Optional[float] = None
                         ) -> Tuple[Tensor, Tensor]:
    """Select NegLabel's negative labels (nouns and adjectives separately).

    Each candidate's affinity to ID is the ``percentile``-quantile of its
    cosine similarities to the C ID labels (:func:`label_affinity`). Nouns
    and adjectives are ranked separately by ascending affinity and the first
    ``int(len * ratio)`` of each are kept (the least ID-like ones). With
    ``max_cos`` (CSP: 0.95) a candidate more similar than that to some ID
    label gets affinity 1.0 first (:func:`label_affinity`).

    Args:
        pos_feats: (C, D) L2-normalised ID label embeddings, C >= 1.
        noun_feats: (N, D) L2-normalised noun candidate embeddings.
        adj_feats: (M, D) L2-normalised adjective candidate embeddings.
        percentile: quantile level in [0, 1] (NegLabel: 0.95).
        ratio: fraction of each pool to keep, in [0, 1] (NegLabel: 0.15).
        chunk_size: candidate rows per quantile chunk (memory bound).
        max_cos: optional exclusion threshold (``None``: NegLabel's rule).

    Returns:
        ``(noun_idx, adj_idx)``: int64 tensors on the inputs' device, of
        lengths ``int(N * ratio)`` and ``int(M * ratio)``, indexing rows of
        ``noun_feats`` / ``adj_feats``, ordered by *ascending* affinity (the
        least ID-like label first; ties by ascending index). The NegLabel
        label set is the selected nouns followed by the selected adjectives.

    Raises:
        ValueError: naming the offending argument for non-2-D inputs,
            mismatched D, a percentile or ratio outside [0, 1], or a
            non-positive chunk_size.
    """
    check_matrix(pos_feats, 'pos_feats', '(num_labels, D)')
    check_matrix(noun_feats, 'noun_feats', '(num_labels, D)')
    check_matrix(adj_feats, 'adj_feats', '(num_labels, D)')
    for name, feats in (('noun_feats', noun_feats), ('adj_feats', adj_feats)):
        if feats.shape[1] != pos_feats.shape[1]:
            raise ValueError(
                f'{name} has embedding dim {feats.shape[1]} but pos_feats '
                f'has {pos_feats.shape[1]}')
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'ratio must be in [0, 1], got {ratio}')
    noun_aff = label_affinity(noun_feats, pos_feats, percentile, chunk_size,
                              max_cos)
    adj_aff = label_affinity(adj_feats, pos_feats, percentile, chunk_size,
                             max_cos)
    return _lowest_affinity(noun_aff, ratio), _lowest_affinity(adj_aff, ratio)


def neglabel_group_indices(num_neg: int, ngroup: int = 1,
                           seed: int = 0) -> Tensor:
    """Fixed split of ``num_neg`` negative labels into ``ngroup`` groups.

    ``ngroup == 1``: a single group holding all labels in their given order
    (no shuffle). ``ngroup > 1``, as NegLabel's ``ScalableClassifier.
    grouping``: the **last** ``num_neg % ngroup`` labels of the given order
    are dropped first (in the mined order: the most ID-like adjectives),
    the remaining ``K' = ngroup * (num_neg // ngroup)`` are permuted once
    by ``torch.randperm(K')`` with a CPU ``torch.Generator`` seeded by
    ``seed`` (deterministic; the published code draws a CUDA ``randperm``
    after ``torch.manual_seed(seed)``, whose stream differs), and the
    permutation is cut row-wise into ``ngroup`` equal groups.

    Args:
        num_neg: number of negative labels K >= 1.
        ngroup: number of groups, 1 <= ngroup <= K.
        seed: generator seed (ignored when ngroup == 1).

    Returns:
        (ngroup, K // ngroup) int64 CPU tensor of column indices into the
        negative labels, all ``< K'``; each label appears at most once.
    """
    if isinstance(num_neg, bool) or not isinstance(num_neg, int) \
            or num_neg < 1:
        raise ValueError(f'num_neg must be a positive int, got {num_neg!r}')
    if isinstance(ngroup, bool) or not isinstance(ngroup, int) or ngroup < 1:
        raise ValueError(f'ngroup must be a positive int, got {ngroup!r}')
    if num_neg < ngroup:
        raise ValueError(
            f'cannot split {num_neg} negative labels into ngroup={ngroup} '
            'groups (need num_neg >= ngroup)')
    if ngroup == 1:
        return torch.arange(num_neg, dtype=torch.long).view(1, num_neg)
    per_group = num_neg // ngroup
    gen = torch.Generator(device='cpu')
    gen.manual_seed(seed)
    perm = torch.randperm(ngroup * per_group, generator=gen, dtype=torch.long)
    return perm.view(ngroup, per_group)


def neglabel_score(pos_sim: Tensor,
                   neg_sim: Tensor,
                   temperature: float = 0.01,
                   ngroup: int = 1,
                   seed: int = 0,
                   group_indices: Optional[Tensor] = None) -> Tensor:
    """NegLabel score: softmax mass on the ID labels, averaged over groups.

    For one group G of negative labels and tau = ``temperature``::

        S_G = sum_i exp(pos_i / tau)
              / (sum_i exp(pos_i / tau) + sum_{j in G} exp(neg_j / tau))

    evaluated in log space as ``exp(lse_pos - logaddexp(lse_pos, lse_G))``.
    The score is the mean of S_G over the groups of
    :func:`neglabel_group_indices` (``ngroup == 1``: one group with every
    negative label).

    Args:
        pos_sim: (B, C) cosine similarities of the images to the ID labels.
        neg_sim: (B, K) cosine similarities to the negative labels, same B
            and device.
        temperature: tau > 0 (NegLabel: 0.01).
        ngroup: number of groups (NegLabel reference: 100), 1 <= ngroup <= K.
        seed: seed of the group shuffle.
        group_indices: optional precomputed (G, K // G) int64 output of
            :func:`neglabel_group_indices` (any device); when given it is
            used instead of recomputing it, ``seed`` is ignored and
            ``ngroup`` must be 1 (the default) or equal G. Indices on the
            CPU are range-checked; indices on an accelerator are not (the
            check would wait for the device in every call).

    Returns:
        (B,) scores in (0, 1]; higher = more in-distribution. float32 for
        half/float32 inputs, float64 if either input is float64.
    """
    check_matrix(pos_sim, 'pos_sim', '(B, C)')
    check_matrix(neg_sim, 'neg_sim', '(B, K)')
    if pos_sim.shape[0] != neg_sim.shape[0]:
        raise ValueError(
            'pos_sim and neg_sim must have the same batch size, got '
            f'{pos_sim.shape[0]} and {neg_sim.shape[0]}')
    if pos_sim.shape[1] == 0:
        raise ValueError('pos_sim must hold at least one ID label (C >= 1)')
    if neg_sim.shape[1] == 0:
        raise ValueError('neg_sim must hold at least one negative label')
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')

    num_neg = neg_sim.shape[1]
    if group_indices is None:
        group_indices = neglabel_group_indices(num_neg, ngroup, seed)
    else:
        if group_indices.dim() != 2 or group_indices.numel() == 0:
            raise ValueError(
                'group_indices must be a non-empty 2-D (ngroup, K // ngroup) '
                f'tensor, got shape {tuple(group_indices.shape)}')
        if ngroup not in (1, group_indices.shape[0]):
            raise ValueError(
                f'ngroup={ngroup} disagrees with group_indices, which has '
                f'{group_indices.shape[0]} groups')
        if group_indices.device.type == 'cpu' and (
                int(group_indices.min()) < 0
                or int(group_indices.max()) >= num_neg):
            raise ValueError(
                f'group_indices must lie in [0, {num_neg}) for neg_sim with '
                f'{num_neg} labels')

    dtype = _compute_dtype(pos_sim, neg_sim)
    lse_pos = torch.logsumexp(pos_sim.to(dtype) / temperature, dim=1)  # (B,)
    return _grouped_mass(lse_pos, neg_sim.to(dtype) / temperature,
                         group_indices)


def _grouped_mass(lse_pos: Tensor, neg_scaled: Tensor,
                  group_indices: Tensor) -> Tensor:
    """Mean over the groups of ``exp(lse_pos - logaddexp(lse_pos,
    lse_G))``: ``lse_pos`` (B,), ``neg_scaled`` (B, K) = neg_sim / tau,
    ``group_indices`` (G, n) -> (B,)."""
    idx = group_indices.to(device=neg_scaled.device, dtype=torch.long)
    # (B, G, K // G) -> (B, G)
    lse_neg = torch.logsumexp(neg_scaled[:, idx], dim=2)
    lse_pos = lse_pos.unsqueeze(1)
    per_group = torch.exp(lse_pos - torch.logaddexp(lse_pos, lse_neg))
    return per_group.mean(dim=1)


def neglabel_seed_group_indices(num_neg: int, ngroup: int,
                                seeds: Sequence[int]) -> Tensor:
    """The group splits of several seeds, stacked: ``(S, ngroup, K //
    ngroup)`` int64 CPU tensor, row ``s`` = ``neglabel_group_indices(
    num_neg, ngroup, seeds[s])``."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError('seeds must hold at least one seed')
    return torch.stack(
        [neglabel_group_indices(num_neg, ngroup, int(s)) for s in seeds])


def neglabel_seed_scores(pos_sim: Tensor,
                         neg_sim: Tensor,
                         group_indices: Tensor,
                         temperature: float = 0.01,
                         max_elements: int = 2**26) -> Tensor:
    """NegLabel scores under several group splits at once (seed repeats).

    Row ``s`` is ``neglabel_score(pos_sim, neg_sim, temperature,
    group_indices=group_indices[s])``; the ID term is computed once and
    the splits are evaluated together, a few at a time so that the
    gathered ``(B, S', G, K // G)`` similarities stay under
    ``max_elements`` elements.

    Args:
        pos_sim: (B, C) cosine similarities to the ID labels.
        neg_sim: (B, K) cosine similarities to the negative labels.
        group_indices: (S, G, K // G) int64 splits, e.g. of
            :func:`neglabel_seed_group_indices` (any device; not
            range-checked on accelerators, see :func:`neglabel_score`).
        temperature: tau > 0.
        max_elements: memory bound of one evaluation step (>= 1).

    Returns:
        (S, B) scores in (0, 1], dtype as :func:`neglabel_score`'s.
    """
    check_matrix(pos_sim, 'pos_sim', '(B, C)')
    check_matrix(neg_sim, 'neg_sim', '(B, K)')
    if pos_sim.shape[0] != neg_sim.shape[0]:
        raise ValueError(
            'pos_sim and neg_sim must have the same batch size, got '
            f'{pos_sim.shape[0]} and {neg_sim.shape[0]}')
    if pos_sim.shape[1] == 0 or neg_sim.shape[1] == 0:
        raise ValueError('pos_sim and neg_sim must hold at least one label')
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if group_indices.dim() != 3 or group_indices.numel() == 0:
        raise ValueError(
            'group_indices must be a non-empty 3-D (S, ngroup, K // ngroup) '
            f'tensor, got shape {tuple(group_indices.shape)}')
    num_neg = neg_sim.shape[1]
    if group_indices.device.type == 'cpu' and (
            int(group_indices.min()) < 0
            or int(group_indices.max()) >= num_neg):
        raise ValueError(
            f'group_indices must lie in [0, {num_neg}) for neg_sim with '
            f'{num_neg} labels')
    dtype = _compute_dtype(pos_sim, neg_sim)
    lse_pos = torch.logsumexp(pos_sim.to(dtype) / temperature, dim=1)
    neg_scaled = neg_sim.to(dtype) / temperature
    num_seeds, ngroup, per_group = group_indices.shape
    step = max(1, max_elements // max(1, neg_sim.shape[0] * ngroup *
                                      per_group))
    idx = group_indices.to(device=neg_sim.device, dtype=torch.long)
    out = []
    for start in range(0, num_seeds, step):
        chunk = idx[start:start + step]  # (S', G, n)
        flat = chunk.reshape(-1, per_group)  # (S' * G, n)
        lse_neg = torch.logsumexp(neg_scaled[:, flat], dim=2).view(
            -1, chunk.shape[0], ngroup)  # (B, S', G)
        lse = lse_pos.view(-1, 1, 1)
        mass = torch.exp(lse - torch.logaddexp(lse, lse_neg)).mean(dim=2)
        out.append(mass.T)  # (S', B)
    return torch.cat(out)


def top_negative_indices(neg_sim: Tensor, k: int) -> Tensor:
    """Indices of each image's ``k`` most similar negative labels.

    Args:
        neg_sim: (B, K) similarities to the negative labels.
        k: how many, >= 0; at most K are returned.

    Returns:
        (B, min(k, K)) int64 column indices, most similar first.
    """
    check_matrix(neg_sim, 'neg_sim', '(B, K)')
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f'k must be an int >= 0, got {k!r}')
    k = min(k, neg_sim.shape[1])
    return neg_sim.topk(k, dim=1, largest=True, sorted=True).indices
