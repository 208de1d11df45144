"""Data preprocessing for the CLIP classifier without host synchronisation."""
from typing import Optional, Sequence

import torch
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS

from .device_decode import decode_batch


@MODELS.register_module()
class CLIPDataPreprocessor(ClsDataPreprocessor):
    """mmpretrain's ``ClsDataPreprocessor`` that never waits for the GPU.

    The images are normalised (and flipped BGR -> RGB) exactly as by
    ``ClsDataPreprocessor``, but

    * the labels stay where the dataloader put them (the host):
      ``ClsDataPreprocessor`` copies them to the GPU with a blocking copy,
      and ``MultiModalClassifier`` needs them on the host for its per-batch
      bookkeeping (distinct classes, prompt lengths), so each training
      iteration synchronised twice with the GPU and the CPU could not queue
      the next iteration's work while the GPU finished the last one;
    * the images are copied without blocking (``non_blocking=True``; with
      the configs' ``pin_memory=True`` the copy is asynchronous).

    Batches of :class:`~cma_ood.datasets.DecodeOnDevice` pipelines (an
    ``encoded`` entry from :func:`~cma_ood.datasets.stacked_collate`) are
    decoded and transformed on the preprocessor's device first
    (:func:`~cma_ood.models.utils.device_decode.decode_batch`), in the
    channel order of the CPU pipeline (BGR), then normalised as any other.

    Where the labels are needed on the GPU (``to_onehot``, which
    ``batch_augments`` such as Mixup switch on) it behaves exactly like
    ``ClsDataPreprocessor``.

    Args:
        mean, std, to_rgb, pad_size_divisor, pad_value, to_onehot,
            num_classes, batch_augments: as ``ClsDataPreprocessor``.
        non_blocking (bool): copy inputs to the device asynchronously.
            Defaults to True.
        decode_ahead (bool): let
            :class:`~cma_ood.engine.hooks.DecodeAheadHook` (default
            runtime) decode GPU-decoded batches one batch ahead in a
            background thread; False decodes each batch in :meth:`forward`.
            Defaults to True.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 non_blocking: bool = True,
                 decode_ahead: bool = True,
                 **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)
        self._non_blocking = non_blocking
        self.decode_ahead = decode_ahead

    def decode(self, data: dict) -> dict:
        """Replace the ``encoded`` files of a batch by the decoded batch
        ``inputs`` (uint8, BGR, on the preprocessor's device).

        :class:`~cma_ood.engine.hooks.DecodeAheadHook` calls it one batch
        ahead; :meth:`forward` calls it for batches still encoded.
        """
        data = dict(data)
        encoded = data.pop('encoded')
        if not isinstance(encoded, dict) or 'positions' not in encoded:
            raise ValueError(
                'CLIPDataPreprocessor: a DecodeOnDevice batch that '
                "stacked_collate did not collate; set the dataloader's "
                "collate_fn=dict(type='stacked_collate')")
        samples = data['data_samples']
        positions = encoded['positions'].tolist()
        names = [samples[i].metainfo.get('img_path', f'sample {i}')
                 for i in positions]
        images = decode_batch(encoded, self._device, names).flip(1)  # BGR
        if 'inputs' not in data:
            data['inputs'] = images
            return data
        others = data['inputs']
        others = torch.stack(list(others)) if isinstance(
            others, (list, tuple)) else others
        if others.shape[1:] != images.shape[1:]:
            raise ValueError(
                'DecodeOnDevice: the images decoded on the CPU '
                f'{tuple(others.shape[1:])} and on the device '
                f'{tuple(images.shape[1:])} differ in size; the pipeline '
                'must end in a fixed size (e.g. CenterCrop)')
        batch = torch.empty((len(samples), *images.shape[1:]),
                            dtype=images.dtype, device=images.device)
        is_encoded = torch.zeros(len(samples), dtype=torch.bool)
        is_encoded[positions] = True
        batch[encoded['positions'].to(images.device)] = images
        batch[(~is_encoded).nonzero()[:, 0].to(images.device)] = others.to(
            images.device, non_blocking=self._non_blocking)
        data['inputs'] = batch
        return data

    def forward(self, data: dict, training: bool = False) -> dict:
        if 'encoded' in data:
            data = self.decode(data)
        if self.to_onehot:
            return super().forward(data, training)
        samples = data.get('data_samples')
        out = super().forward(dict(data, data_samples=None), training)
        out['data_samples'] = samples
        return out
