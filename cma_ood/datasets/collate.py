"""A collate function that hands a batch over as few tensors.

MMEngine's default ``pseudo_collate`` keeps a batch's images as a list of
tensors; each one then travels from a dataloader worker to the main
process as its own shared-memory file descriptor, which cost a third of
the main process's time in a GPU test run (docs/benchmarks.md).
:func:`stacked_collate` stacks equally shaped images in the worker and
packs the encoded files of :class:`~cma_ood.datasets.DecodeOnDevice` into
one byte buffer, so a batch is two or three tensors whatever its size.
"""
from typing import Sequence

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import FUNCTIONS


def pack_encoded(encoded: Sequence[dict]) -> dict:
    """Pack the ``encoded`` entries of :class:`DecodeOnDevice` samples.

    Returns:
        dict with ``data`` (uint8 ``(total_bytes, )``: the files one after
        the other), ``offsets`` (int64 ``(n + 1, )``: file ``i`` is
        ``data[offsets[i]:offsets[i + 1]]``) and ``plans`` (int64
        ``(n, 12)``, :data:`~cma_ood.datasets.transforms.PLAN_FIELDS`).
    """
    sizes = [len(e['data']) for e in encoded]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = torch.empty(int(offsets[-1]), dtype=torch.uint8)
    flat = data.numpy()
    for e, start, end in zip(encoded, offsets[:-1], offsets[1:]):
        flat[start:end] = e['data']
    return dict(
        data=data,
        offsets=torch.from_numpy(offsets),
        plans=torch.from_numpy(np.stack([e['plan'] for e in encoded])))


@FUNCTIONS.register_module()
def stacked_collate(data_batch: Sequence[dict]) -> dict:
    """``pseudo_collate`` for mmpretrain samples, batched in tensors.

    Each sample is ``dict(inputs=(C, H, W) tensor, data_samples=...)`` as
    ``PackInputs`` gives it, or ``dict(data_samples=..., encoded=...)`` as
    ``DecodeOnDevice`` gives it for a file decoded on the GPU.

    Returns:
        dict with ``data_samples`` (list, in batch order) and

        * ``inputs``: the decoded samples' images, one ``(n, C, H, W)``
          tensor when their shapes agree, else a list (as
          ``pseudo_collate``); absent when every sample is encoded;
        * ``encoded`` (only when some samples are encoded): the
          :func:`pack_encoded` buffers plus ``positions`` (int64: the batch
          index of each encoded sample; the decoded samples fill the other
          positions in order).

        Samples of any other form are collated by ``pseudo_collate``.
    """
    if not all(
            isinstance(s, dict) and 'data_samples' in s
            and set(s) <= {'inputs', 'data_samples', 'encoded'}
            and ('inputs' in s) != ('encoded' in s) for s in data_batch):
        return pseudo_collate(data_batch)
    out = dict(data_samples=[s['data_samples'] for s in data_batch])
    images = [s['inputs'] for s in data_batch if 'inputs' in s]
    if images:
        same = all(img.shape == images[0].shape for img in images)
        out['inputs'] = torch.stack(images) if same else images
    positions = [i for i, s in enumerate(data_batch) if 'encoded' in s]
    if positions:
        out['encoded'] = dict(
            pack_encoded([data_batch[i]['encoded'] for i in positions]),
            positions=torch.tensor(positions, dtype=torch.int64))
    return out
