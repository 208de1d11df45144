"""A linear classifier on frozen (cached) CLIP image features.

:class:`LinearProbe` is trained through MMEngine's runner (``tools/
train.py``) on :class:`~cma_ood.datasets.CachedFeatureDataset`: PLP with
the zero-shot pseudo-labels as targets, supervised linear probing with the
true labels. As in PLP's ``linear_probing.py`` (``embed_norm=True``) the
inputs are z-scored with the training set's per-dimension mean and unbiased
std, which the probe keeps as buffers (saved in its checkpoints, like PLP's
``embed_mean`` / ``embed_std``), so validation, test and OoD features are
normalised with the *training* statistics.
:class:`~cma_ood.models.ProbeScorer` applies a trained probe inside
``MultiModalClassifier`` so its OoD scores join the common table.
"""
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ...utils.feature_file import load_feature_file
from ..ood_scorers.functional.feature import (check_normalize, feature_stats,
                                             normalize_features)

Targets = Union[torch.Tensor, Sequence[torch.Tensor], Sequence[DataSample],
                None]


#: the ``input_norm`` buffer of a probe: how it normalises its inputs
NORM_CODES = {None: 0, 'l2': 1, 'zscore': 2}
NORM_NAMES = {code: name for name, code in NORM_CODES.items()}


def probe_logits(feats: torch.Tensor,
                 weight: torch.Tensor,
                 bias: Optional[torch.Tensor],
                 normalize: Optional[str] = 'zscore',
                 mean: Optional[torch.Tensor] = None,
                 std: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits of a linear probe: ``norm(feats) @ weight.T + bias``.

    Args:
        feats: ``(B, D)`` image features (un-normalised).
        weight: ``(C, D)``; bias: ``(C,)`` or ``None``.
        normalize: ``'zscore'`` (``(feats - mean) / std`` with the training
            statistics), ``'l2'`` (unit rows) or ``None``; see
            :func:`~cma_ood.models.ood_scorers.functional.feature.normalize_features`.
        mean, std: ``(D,)`` training statistics for ``'zscore'``.

    Returns:
        float32 ``(B, C)``.
    """
    x = normalize_features(feats, normalize, mean, std)
    return F.linear(x, weight.float(),
                    None if bias is None else bias.float())


@MODELS.register_module()
class LinearProbe(BaseModel):
    """``nn.Linear(in_dim, num_classes)`` on normalised image features.

    Inputs are ``(B, D)`` features (a stacked tensor, as
    ``default_collate`` gives, or a list of ``(D,)`` tensors from
    ``pseudo_collate``), normalised by ``normalize`` before the layer:

    * ``'zscore'`` (PLP, the default): ``(x - mean) / std`` with the
      per-dimension mean and unbiased std of the training features
      (:func:`~cma_ood.models.ood_scorers.functional.feature.feature_stats`). They are the
      buffers ``feat_mean`` / ``feat_std``, computed from ``stats_file``
      (the training feature file) at the first forward unless a checkpoint
      or :meth:`set_feature_stats` provided them;
    * ``'l2'``: unit-length rows (this repository's earlier probe);
    * ``None``: the features as they are.

    The buffer ``input_norm`` records the choice in checkpoints
    (:data:`NORM_CODES`), so :class:`~cma_ood.models.ProbeScorer` applies a
    probe exactly as it was trained. Targets (``data_samples``) are int64
    class indices (a ``(B,)`` tensor or a list of 0-d tensors, as
    :class:`~cma_ood.datasets.CachedFeatureDataset` serves them) or
    ``DataSample`` objects with ``gt_label``.

    Modes: ``loss`` (the configured loss, cross-entropy by default),
    ``predict`` (``DataSample`` with ``pred_score`` = softmax,
    ``pred_label`` and ``gt_label``, so mmpretrain's ``Accuracy`` works),
    ``tensor`` (the logits ``(B, C)``).

    Args:
        in_dim (int): feature dimension ``D``.
        num_classes (int): number of classes ``C``.
        bias (bool): learn a bias. Defaults to True.
        normalize (str | None): ``'zscore'``, ``'l2'`` or ``None``.
        stats_file (str, optional): the training feature file the z-score
            statistics are computed from (``normalize='zscore'``).
        loss (dict): loss config. Defaults to mmpretrain's
            ``CrossEntropyLoss`` (no label smoothing, as PLP's
            ``nn.CrossEntropyLoss()``).
        data_preprocessor (dict, optional): defaults to MMEngine's
            ``BaseDataPreprocessor`` (moves data to the device).
    """

    def __init__(self,
                 in_dim: int,
                 num_classes: int,
                 bias: bool = True,
                 normalize: Optional[str] = 'zscore',
                 stats_file: Optional[str] = None,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        check_normalize(normalize, 'LinearProbe')
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
        self.normalize = normalize
        self.stats_file = stats_file
        self.register_buffer('input_norm',
                             torch.tensor(NORM_CODES[normalize]))
        self._stats_ready = normalize != 'zscore'
        if normalize == 'zscore':
            self.register_buffer('feat_mean',
                                 torch.full((in_dim, ), math.nan))
            self.register_buffer('feat_std', torch.full((in_dim, ), math.nan))
        self.register_load_state_dict_post_hook(LinearProbe._after_load)

    # ------------------------------------------------------- statistics
    @staticmethod
    def _after_load(module: 'LinearProbe', incompatible_keys) -> None:
        code = int(module.input_norm)
        if code != NORM_CODES[module.normalize]:
            raise ValueError(
                f'LinearProbe: the loaded probe normalises its inputs with '
                f'{NORM_NAMES.get(code, code)!r}, this one is configured '
                f'with normalize={module.normalize!r}')
        if module.normalize == 'zscore':
            module._stats_ready = bool(
                torch.isfinite(module.feat_std).all()
                and torch.isfinite(module.feat_mean).all())

    def set_feature_stats(self, mean: torch.Tensor,
                          std: torch.Tensor) -> None:
        """Set the z-score statistics ``(D,)`` (training mean and std)."""
        if self.normalize != 'zscore':
            raise RuntimeError('LinearProbe.set_feature_stats: the probe '
                               f'normalises with {self.normalize!r}, not '
                               "'zscore'")
        for name, value in (('mean', mean), ('std', std)):
            if value.shape != (self.in_dim, ):
                raise ValueError(f'LinearProbe: {name} must have shape '
                                 f'({self.in_dim},), got '
                                 f'{tuple(value.shape)}')
        self.feat_mean.copy_(mean.to(self.feat_mean))
        self.feat_std.copy_(std.to(self.feat_std))
        self._stats_ready = True

    @torch.no_grad()
    def fit_feature_stats(self) -> None:
        """Compute the z-score statistics from ``stats_file``."""
        if not self.stats_file:
            raise RuntimeError(
                "LinearProbe: normalize='zscore' needs the training "
                'statistics: set stats_file (the training feature file), '
                'load a trained probe checkpoint or call set_feature_stats')
        data = load_feature_file(self.stats_file, what='LinearProbe')
        feats = data['feats']
        if feats.shape[1] != self.in_dim:
            raise ValueError(
                f'LinearProbe: {self.stats_file} holds {feats.shape[1]}-d '
                f'features, the probe takes in_dim={self.in_dim}')
        # all rows of the file, as PLP's mean.pt / std.pt
        self.set_feature_stats(*feature_stats(feats))
        print_log(
            f'LinearProbe: z-score statistics of {feats.shape[0]} '
            f'{data["meta"]["feature"]} features of {self.stats_file}',
            logger='current')

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
        if not self._stats_ready:
            self.fit_feature_stats()
        zscore = self.normalize == 'zscore'
        return probe_logits(
            self._stack(inputs), self.fc.weight, self.fc.bias,
            self.normalize, self.feat_mean if zscore else None,
            self.feat_std if zscore else None)

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
