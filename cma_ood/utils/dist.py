"""Differentiable all-gather for contrastive losses under DDP."""
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.dist import get_dist_info


def all_gather_sizes(n: int, device: torch.device) -> List[int]:
    """Gather the integer ``n`` of every rank (ordered by rank)."""
    local_n = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local_n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local_n)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather rows of a tensor across ranks, keeping gradients.

    Forward concatenates every rank's ``(n_r, ...)`` tensor along dim 0 (ranks
    may hold different ``n_r``). Backward sums the gradient of the gathered
    tensor over ranks (every rank's loss may depend on every row) and returns
    this rank's slice, i.e. ``d(sum_k loss_k) / d x_r``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        max_n = max(sizes)
        padded = x.new_zeros((max_n, *x.shape[1:]))
        padded[:x.shape[0]] = x
        parts: List[torch.Tensor] = [
            torch.empty_like(padded) for _ in range(world_size)
        ]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes = sizes
        ctx.rank = rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def gather_with_grad(x: torch.Tensor,
                     sizes: Optional[List[int]] = None) -> torch.Tensor:
    """Concatenate ``x`` (``(n_r, ...)``) from all ranks along dim 0.

    Gradients flow back to every rank's own rows, summed over the ranks'
    losses. ``sizes`` (every rank's ``n_r``, from :func:`all_gather_sizes`)
    saves a collective when known. Without an initialised process group (or
    with world size 1) ``x`` is returned unchanged.
    """
    _, world_size = get_dist_info()
    if world_size == 1:
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes)
