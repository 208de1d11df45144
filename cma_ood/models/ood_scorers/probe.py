"""OoD scores on the logits of a linear probe trained on frozen features
(PLP / linear probing, TMLR 2024)."""
import os.path as osp
from typing import Optional

import torch
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ...utils.checkpoint import safe_torch_load
from ..multimodal.clip_vision import image_feature_dim
from ..probes.linear_probe import NORM_CODES, NORM_NAMES, probe_logits
from .base import BaseOoDScorer, ScorerContext
from .feature import TestFeatures, check_same_encoder
from .functional.logit import (energy_score, l1_norm_score, max_logit_score,
                               msp_score)

_PROBE_SCORES = {
    'msp': 'MSP',
    'max_logit': 'MaxLogit',
    'energy': 'Energy',
    'l1_norm': 'L1Norm'
}


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a work dir whose ``last_checkpoint`` names
    one (as MMEngine's ``CheckpointHook`` writes it)."""
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        pointer = osp.join(path, 'last_checkpoint')
        if not osp.isfile(pointer):
            raise FileNotFoundError(
                f'{path} is a directory without a last_checkpoint file; '
                'pass the probe checkpoint (.pth) itself')
        with open(pointer) as f:
            path = f.read().strip()
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'probe checkpoint not found: {path}; train the probe first '
            '(tools/train.py configs/plp/... or configs/linear-probe/...)')
    return path


@MODELS.register_module()
class ProbeScorer(BaseOoDScorer):
    """OoD score on the logits of a trained linear probe.

    The probe is applied to the features it was trained on (the kind
    recorded by :class:`~cma_ood.datasets.CachedFeatureDataset` in the
    checkpoint's ``dataset_meta``: pre-projection features by default,
    read from the classifier's image tower; see :class:`TestFeatures`),
    normalised as in training (the probe's ``input_norm`` buffer; z-score
    with the training statistics stored in the probe): ``logits =
    norm(x) @ W.T + b``, then ``score``:

    * ``'msp'``: :func:`~cma_ood.models.msp_score` (PLP's ``msp``);
    * ``'energy'``: :func:`~cma_ood.models.energy_score` with
      ``temperature`` (PLP's ``free_energy``; PLP uses T = 1);
    * ``'max_logit'``: :func:`~cma_ood.models.max_logit_score`;
    * ``'l1_norm'``: :func:`~cma_ood.models.ood_scorers.functional.logit.
      l1_norm_score` (PLP's ``l1_norm``).

    Probes of earlier versions (no ``input_norm``, no recorded feature)
    are applied as they were trained: L2-normalised embeddings.

    Args:
        probe_checkpoint (str): a ``LinearProbe`` checkpoint from
            ``tools/train.py`` (or its work dir: ``last_checkpoint`` is
            followed); read with ``weights_only=True``.
        score (str): ``'msp'``, ``'energy'``, ``'max_logit'`` or
            ``'l1_norm'``.
        temperature (float): energy temperature.
        check_encoder (bool): require the features the probe was trained on
            to come from the classifier's image tower (recorded by
            ``CachedFeatureDataset`` in the checkpoint's ``dataset_meta``).
        name (str, optional): results key; ``'Probe-MSP'`` etc. by default.
    """

    def __init__(self,
                 probe_checkpoint: str,
                 score: str = 'msp',
                 temperature: float = 1.0,
                 check_encoder: bool = True,
                 name: Optional[str] = None):
        if score not in _PROBE_SCORES:
            raise ValueError(f'ProbeScorer: score must be one of '
                             f'{list(_PROBE_SCORES)}, got {score!r}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        super().__init__(name or f'Probe-{_PROBE_SCORES[score]}')
        self.probe_checkpoint = probe_checkpoint
        self.score = score
        self.temperature = float(temperature)
        self.check_encoder = check_encoder
        self.normalize: Optional[str] = None
        self.feature: Optional[str] = None
        self._features: Optional[TestFeatures] = None
        for attr in ('weight', 'bias', 'feat_mean', 'feat_std'):
            self.register_buffer(attr, None, persistent=False)

    def prepare(self, context: ScorerContext) -> None:
        path = resolve_checkpoint(self.probe_checkpoint)
        ckpt = safe_torch_load(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) \
            else None
        if not isinstance(state, dict) or 'fc.weight' not in state:
            raise KeyError(f'ProbeScorer: {path} holds no LinearProbe '
                           'weights ("fc.weight")')
        weight, bias = state['fc.weight'], state.get('fc.bias')
        num = context.num_classes
        if num and weight.shape[0] != num:
            raise ValueError(
                f'ProbeScorer: the probe {path} has {weight.shape[0]} '
                f'classes but the classifier has {num}')
        meta = (ckpt.get('meta') or {}).get('dataset_meta') or {}
        if self.check_encoder:
            check_same_encoder('ProbeScorer', f'the probe {path}',
                               meta.get('image_encoder_sha256'), context)
        # probes of earlier versions: L2-normalised embeddings
        code = state.get('input_norm')
        code = NORM_CODES['l2'] if code is None else int(code)
        if code not in NORM_NAMES:
            raise ValueError(f'ProbeScorer: {path} has an unknown '
                             f'input_norm {code}')
        self.normalize = NORM_NAMES[code]
        self.feature = meta.get('feature') or 'embedding'
        dim = image_feature_dim(context.image_tower, self.feature)
        if weight.shape[1] != dim:
            raise ValueError(
                f'ProbeScorer: the probe {path} takes {weight.shape[1]}-d '
                f'inputs, the classifier\'s {self.feature} features are '
                f'{dim}-d')
        device = context.device
        self.weight = weight.to(device, torch.float32)
        self.bias = None if bias is None else bias.to(device, torch.float32)
        if self.normalize == 'zscore':
            mean, std = state.get('feat_mean'), state.get('feat_std')
            if mean is None or std is None or not (
                    torch.isfinite(mean).all() and torch.isfinite(std).all()):
                raise ValueError(f'ProbeScorer: {path} has no finite '
                                 'z-score statistics (feat_mean/feat_std)')
            self.feat_mean = mean.to(device, torch.float32)
            self.feat_std = std.to(device, torch.float32)
        self._features = TestFeatures('ProbeScorer', context,
                                      self.feature,
                                      raw=self.normalize != 'l2')
        print_log(f'ProbeScorer ({self.name}): {weight.shape[0]} x '
                  f'{weight.shape[1]} probe on {self.normalize} '
                  f'{self.feature} features from {path}', logger='current')

    def forward(self, image_embeds, cos_sim, logit_scale):
        if self.weight is None or self._features is None:
            raise RuntimeError('ProbeScorer.prepare(context) must run '
                               'before scoring')
        with torch.autocast(image_embeds.device.type, enabled=False):
            logits = probe_logits(self._features(image_embeds), self.weight,
                                  self.bias, self.normalize, self.feat_mean,
                                  self.feat_std)
            if self.score == 'msp':
                return msp_score(logits)
            if self.score == 'max_logit':
                return max_logit_score(logits)
            if self.score == 'l1_norm':
                return l1_norm_score(logits)
            return energy_score(logits, self.temperature)
