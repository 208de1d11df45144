"""Data preprocessing for the CLIP classifier without host synchronisation."""
from typing import Optional, Sequence

from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS


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

    Where the labels are needed on the GPU (``to_onehot``, which
    ``batch_augments`` such as Mixup switch on) it behaves exactly like
    ``ClsDataPreprocessor``.

    Args:
        mean, std, to_rgb, pad_size_divisor, pad_value, to_onehot,
            num_classes, batch_augments: as ``ClsDataPreprocessor``.
        non_blocking (bool): copy inputs to the device asynchronously.
            Defaults to True.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 non_blocking: bool = True,
                 **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)
        self._non_blocking = non_blocking

    def forward(self, data: dict, training: bool = False) -> dict:
        if self.to_onehot:
            return super().forward(data, training)
        samples = data.get('data_samples')
        out = super().forward(dict(data, data_samples=None), training)
        out['data_samples'] = samples
        return out
