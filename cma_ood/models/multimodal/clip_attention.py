"""Self-attention of openai-clip's blocks, batch-first, through SDPA.

openai-clip's towers run ``nn.MultiheadAttention`` sequence-first, which
transposes activations around every attention and, for the text tower,
adds an explicit causal mask. :func:`self_attention` computes the same
attention with the same weights on batch-first activations through
``F.scaled_dot_product_attention``, which picks the flash /
memory-efficient kernels.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def self_attention(attn: nn.MultiheadAttention,
                   x: torch.Tensor,
                   is_causal: bool = False,
                   num_queries: Optional[int] = None) -> torch.Tensor:
    """``attn(x, x, x)`` for batch-first ``x`` ``(B, L, D)``.

    Args:
        attn: an ``nn.MultiheadAttention`` with packed in-projection (as in
            every openai-clip block).
        x: ``(B, L, D)`` input of the attention (after the block's LN).
        is_causal: position ``i`` attends to positions ``<= i`` only (the
            text tower's mask).
        num_queries: compute the output of the first ``num_queries``
            positions only (keys and values still come from all ``L``);
            ``None``: all positions.

    Returns:
        ``(B, num_queries or L, D)``.
    """
    batch, length, dim = x.shape
    heads = attn.num_heads
    head_dim = dim // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if num_queries is None:
        num_queries = length
        qkv = F.linear(x, weight, bias)
        q, k, v = qkv.view(batch, length, 3, heads,
                           head_dim).permute(2, 0, 3, 1, 4)
    else:
        if is_causal:
            raise ValueError('num_queries is only supported without the '
                             'causal mask')
        w_q, w_kv = weight.split([dim, 2 * dim])
        b_q, b_kv = (None, None) if bias is None else bias.split(
            [dim, 2 * dim])
        q = F.linear(x[:, :num_queries], w_q, b_q).view(
            batch, num_queries, heads, head_dim).transpose(1, 2)
        k, v = F.linear(x, w_kv, b_kv).view(batch, length, 2, heads,
                                            head_dim).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return attn.out_proj(
        out.transpose(1, 2).reshape(batch, num_queries, dim))
