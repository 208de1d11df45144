"""Differentiable all-gather for contrastive losses under DDP."""
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.dist import get_comm_device, get_default_group, get_dist_info
from torch.distributed import ProcessGroup


def host_process_group() -> ProcessGroup:
    """A process group of all ranks whose collectives take CPU tensors.

    The default group if its backend works on the CPU (gloo, MPI), else a
    new gloo group: exchanging host values (batch sizes, say) through it
    never waits for the GPU, while the same exchange through NCCL copies
    the value to the GPU and back and so synchronises the host with every
    kernel queued before it. Creating a group is a collective call: every
    rank must call this at the same point of the program.
    """
    group = get_default_group()
    if get_comm_device(group).type == 'cpu':
        return group
    return dist.new_group(backend='gloo')


def all_gather_sizes(n: int,
                     group: Optional[ProcessGroup] = None) -> List[int]:
    """Gather the integer ``n`` of every rank (ordered by rank).

    Through ``group`` (default: the default group) on its communication
    device: with a group from :func:`host_process_group` the exchange stays
    on the host; through NCCL it waits for the GPU.
    """
    local_n = torch.tensor([n], dtype=torch.long,
                           device=get_comm_device(group))
    sizes = [torch.empty_like(local_n)
             for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, local_n, group=group)
    return torch.cat(sizes).tolist()


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
        if x.shape[0] == max_n:
            padded = x.contiguous()
        else:  # all_gather needs equal shapes: pad to the largest rank
            padded = x.new_zeros((max_n, *x.shape[1:]))
            padded[:x.shape[0]] = x
        parts: List[torch.Tensor] = [
            torch.empty_like(padded) for _ in range(world_size)
        ]
        dist.all_gather(parts, padded)
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
    saves a collective, and a host synchronisation under NCCL, when known.
    Without an initialised process group (or with world size 1) ``x`` is
    returned unchanged.
    """
    _, world_size = get_dist_info()
    if world_size == 1:
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0])
    return _GatherWithGrad.apply(x, sizes)
