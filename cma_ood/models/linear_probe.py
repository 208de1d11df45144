"""A linear classifier on frozen (cached) CLIP image embeddings.

:class:`LinearProbe` is trained through MMEngine's runner (``tools/
train.py``) on :class:`~cma_ood.datasets.CachedFeatureDataset`: PLP with
the zero-shot pseudo-labels as targets, supervised linear probing with the
true labels. :class:`~cma_ood.models.ProbeScorer` applies a trained probe
inside ``MultiModalClassifier`` so its OoD scores join the common table.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

Targets = Union[torch.Tensor, Sequence[torch.Tensor], Sequence[DataSample],
                None]


def probe_logits(feats: torch.Tensor, weight: torch.Tensor,
                 bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Logits of a linear probe: ``normalize(feats) @ weight.T + bias``.

    Args:
        feats: ``(B, D)`` image embeddings (raw or normalised: rows are
            L2-normalised here, so cached and fresh embeddings agree).
        weight: ``(C, D)``; bias: ``(C,)`` or ``None``.

    Returns:
        float32 ``(B, C)``.
    """
    x = F.normalize(feats.float(), dim=-1)
    return F.linear(x, weight.float(),
                    None if bias is None else bias.float())


@MODELS.register_module()
class LinearProbe(BaseModel):
    """``nn.Linear(in_dim, num_classes)`` on L2-normalised embeddings.

    Inputs are ``(B, D)`` embeddings (a stacked tensor, as
    ``default_collate`` gives, or a list of ``(D,)`` tensors from
    ``pseudo_collate``). Targets (``data_samples``) are int64 class indices
    (a ``(B,)`` tensor or a list of 0-d tensors, as
    :class:`~cma_ood.datasets.CachedFeatureDataset` serves them) or
    ``DataSample`` objects with ``gt_label``.

    Modes: ``loss`` (the configured loss, cross-entropy by default),
    ``predict`` (``DataSample`` with ``pred_score`` = softmax,
    ``pred_label`` and ``gt_label``, so mmpretrain's ``Accuracy`` works),
    ``tensor`` (the logits ``(B, C)``).

    Args:
        in_dim (int): embedding dimension ``D``.
        num_classes (int): number of classes ``C``.
        bias (bool): learn a bias. Defaults to True.
        loss (dict): loss config. Defaults to mmpretrain's
            ``CrossEntropyLoss``.
        data_preprocessor (dict, optional): defaults to MMEngine's
            ``BaseDataPreprocessor`` (moves data to the device).
    """

    def __init__(self,
                 in_dim: int,
                 num_classes: int,
                 bias: bool = True,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        for name, value in (('in_dim', in_dim), ('num_classes', num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(
                    f'LinearProbe: {name} must be a positive int, got '
                    f'{value!r}')
        if data_preprocessor is None:
            data_preprocessor = dict(type='BaseDataPreprocessor')
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.fc = nn.Linear(in_dim, num_classes, bias=bias)
        self.loss_module = MODELS.build(loss)

    # ---------------------------------------------------------- helpers
    def _stack(self, inputs) -> torch.Tensor:
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        if inputs.dim() != 2 or inputs.shape[1] != self.in_dim:
            raise ValueError(
                f'LinearProbe expects (B, {self.in_dim}) embeddings, got '
                f'shape {tuple(inputs.shape)}')
        return inputs.to(self.fc.weight.device)

    def _targets(self, data_samples: Targets,
                 device) -> Optional[torch.Tensor]:
        if data_samples is None:
            return None
        if isinstance(data_samples, torch.Tensor):
            labels = data_samples.reshape(-1)
        elif len(data_samples) and isinstance(data_samples[0], DataSample):
            labels = torch.cat(
                [ds.gt_label.reshape(-1) for ds in data_samples])
        else:
            labels = torch.stack(
                [torch.as_tensor(t).reshape(()) for t in data_samples])
        labels = labels.to(device=device, dtype=torch.long)
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= self.num_classes):
            raise ValueError(
                f'LinearProbe: targets out of range [0, {self.num_classes}):'
                f' got {labels.min().item()}..{labels.max().item()}')
        return labels

    def logits(self, inputs) -> torch.Tensor:
        """``(B, C)`` logits of :func:`probe_logits`."""
        return probe_logits(
            self._stack(inputs), self.fc.weight, self.fc.bias)

    # ------------------------------------------------------------ modes
    def forward(self, inputs, data_samples: Targets = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.logits(inputs)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs, data_samples: Targets) -> Dict[str, torch.Tensor]:
        logits = self.logits(inputs)
        targets = self._targets(data_samples, logits.device)
        if targets is None:
            raise ValueError('LinearProbe.loss needs targets (data_samples)')
        loss = self.loss_module(logits, targets)
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == targets).float().mean() * 100
        return dict(loss=loss, accuracy=acc)

    @torch.no_grad()
    def predict(self, inputs, data_samples: Targets = None
                ) -> List[DataSample]:
        logits = self.logits(inputs)
        probs = logits.softmax(dim=-1)
        preds = probs.argmax(dim=-1)
        targets = self._targets(data_samples, logits.device)
        out = []
        for i in range(logits.shape[0]):
            ds = data_samples[i] if isinstance(
                data_samples, (list, tuple)) and isinstance(
                    data_samples[i], DataSample) else DataSample()
            ds.set_pred_score(probs[i]).set_pred_label(preds[i])
            if targets is not None and 'gt_label' not in ds:
                ds.set_gt_label(targets[i])
            out.append(ds)
        return out
