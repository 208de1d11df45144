"""Pure helpers of :class:`~cma_ood.models.backbones.FeatureBackbone`:
reading local weights files, timm's and mmpretrain's loading rules,
the features of a batch, the weight fingerprint and timm's evaluation
preprocessing as mmpretrain transforms.

Feature conventions (``(B, D)`` float tensors, un-normalised):

* ``pre_logits``: the features right before the classifier's last linear
  layer. timm: ``model.forward_head(model.forward_features(x),
  pre_logits=True)`` (a ViT's pooled, normed class token; what a timm
  model with ``num_classes=0`` returns, as the PLP study builds its
  ImageNet-21k backbones); mmpretrain: ``ImageClassifier.extract_feat(x,
  stage='pre_logits')`` (the head's ``pre_logits`` of the neck output), or
  the last neck output of a classifier without a head.
* ``logits``: the classifier's output, ``(B, num_classes)``.

timm is an optional dependency: :func:`import_timm` names the extra to
install when it is missing.
"""
import hashlib
import json
import math
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ...utils.checkpoint import (CheckpointFileError,
                                 installed_checkpoint_trust, safe_torch_load,
                                 state_dict_mismatch, strip_prefixes)
from ..utils.fingerprint import hash_tensors

#: what to install for ``source='timm'``
TIMM_EXTRA = 'pip install cma_ood[timm]'
#: wrappers of a state dict in training checkpoints (mmpretrain / MMEngine:
#: ``state_dict``; timm's train.py and others: ``model``)
WRAPPER_KEYS = ('state_dict', 'model', 'model_state_dict')
#: key prefixes of DataParallel / DDP and torch.compile wrappers
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
#: mmpretrain's ImageNet normalisation (0-255 scale, RGB)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_HOWTO = 'see docs/backbones.md for downloading weights'


def import_timm(who: str = 'FeatureBackbone'):
    """The ``timm`` module, or an ``ImportError`` naming the extra."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f"{who}: source='timm' needs the timm package, an optional "
            f'extra of cma_ood: {TIMM_EXTRA} (or pip install timm)') from err
    return timm


# --------------------------------------------------------------- weights
def read_state_dict(path: str, trust: Optional[bool] = None
                    ) -> Dict[str, torch.Tensor]:
    """The tensors of a local weights file as a plain state dict.

    ``.safetensors`` files are read with ``safetensors``; other files
    (``.pth``, ``.pt``, ``.bin``) with ``torch.load(weights_only=True)`` and
    cma_ood's allow-list, or with full unpickling when ``trust`` is True
    (``None``: the trust that the tools' ``--trust-checkpoint`` installed).
    A wrapper dict (:data:`WRAPPER_KEYS`) is unwrapped and the prefixes of
    :data:`WRAPPER_PREFIXES` are removed.

    Raises:
        FileNotFoundError: naming the file.
        CheckpointFileError: naming the file when it holds no state dict.
    """
    path = osp.expanduser(str(path))
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'backbone weights file not found: {path}; set pretrained= to '
            f'the downloaded file ({_HOWTO})')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            state = load_file(path, device='cpu')
        except Exception as err:  # noqa: BLE001  (corrupt / foreign file)
            raise CheckpointFileError(
                f'{path} is not a readable safetensors file '
                f'({type(err).__name__}: {err})') from err
    else:
        if trust is None:
            trust = bool(installed_checkpoint_trust())
        state = safe_torch_load(path, map_location='cpu', trust=trust)
    if isinstance(state, dict):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and torch.is_tensor(v)
            for k, v in state.items()):
        raise CheckpointFileError(
            f'{path} holds no state dict (a dict of tensors, or one under '
            f'{list(WRAPPER_KEYS)})')
    return {strip_prefixes(k, WRAPPER_PREFIXES): v for k, v in state.items()}


def timm_classifier_keys(model: nn.Module) -> List[str]:
    """State-dict names of a timm model's classifier (its
    ``pretrained_cfg['classifier']``: ``'head'`` for a ViT, ``'fc'`` for a
    ResNet, ...) with ``.weight`` / ``.bias``."""
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier')
    if not names:
        return []
    if isinstance(names, str):
        names = (names, )
    return [f'{n}.{p}' for n in names for p in ('weight', 'bias')]


def adapt_timm_state_dict(state: Dict[str, torch.Tensor], model: nn.Module
                          ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """timm's own preparation of a checkpoint for ``model``.

    As ``timm.create_model(..., pretrained=True)`` does: the model family's
    ``checkpoint_filter_fn`` (e.g. a ViT's: other checkpoint layouts,
    position embeddings resampled to the model's grid, the old
    ``pre_logits`` layer dropped), then the classifier entries are dropped
    when the model has no classifier (``num_classes=0``, a features-only
    model). Unlike timm, a classifier of another shape is *not* dropped
    (the model would keep a random head): it is a mismatch for
    :func:`load_state_dict_strict` to report.

    Returns:
        ``(state dict, names of the dropped classifier entries)``.
    """
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, 'checkpoint_filter_fn', None)
    if callable(filter_fn):
        try:
            state = filter_fn(state, model)
        except TypeError:  # older filters take the state dict only
            state = filter_fn(state)
    own = model.state_dict()
    dropped = [k for k in timm_classifier_keys(model)
               if k in state and k not in own]
    state = {k: v for k, v in state.items() if k not in dropped}
    return state, dropped


def adapt_mmpretrain_state_dict(state: Dict[str, torch.Tensor],
                                model: nn.Module
                                ) -> Tuple[Dict[str, torch.Tensor],
                                           List[str]]:
    """Drop the ``head.*`` entries of a classification checkpoint when the
    mmpretrain classifier has no head (features only). Returns ``(state
    dict, dropped names)``."""
    if getattr(model, 'with_head', True):
        return state, []
    dropped = [k for k in state if k.startswith('head.')]
    return {k: v for k, v in state.items() if k not in dropped}, dropped


def load_state_dict_strict(model: nn.Module, state: Dict[str, torch.Tensor],
                           source: str) -> None:
    """Load ``state`` into ``model`` with every key and shape matching.

    Raises:
        ValueError: naming ``source`` (the file) and listing the missing,
            unexpected and mis-shaped entries.
    """
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(
            f'{source} does not match the backbone {type(model).__name__}: '
            f'{problem}. Check the model name / model_kwargs (e.g. '
            'num_classes) against the file')
    model.load_state_dict(state, strict=True)


def backbone_sha256(model: nn.Module, arch: Any) -> str:
    """sha256 of the architecture description ``arch`` (JSON, sorted keys)
    and of every parameter and buffer of ``model`` (names, dtypes, shapes
    and bytes, sorted by name), as
    :func:`~cma_ood.models.utils.fingerprint.image_tower_sha256` for CLIP.
    The description covers what changes the features without changing the
    weights (e.g. timm's ``global_pool``)."""
    hasher = hashlib.sha256()
    hasher.update(b'cma_ood.backbone|')
    hasher.update(json.dumps(arch, sort_keys=True, default=str).encode())
    state = model.state_dict()
    hash_tensors({k: state[k] for k in sorted(state)}, hasher)
    return hasher.hexdigest()


# -------------------------------------------------------------- features
def _as_matrix(feats, who: str) -> torch.Tensor:
    if isinstance(feats, (tuple, list)):
        feats = feats[-1]
    if not torch.is_tensor(feats) or feats.dim() != 2:
        shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats)
        raise ValueError(
            f'{who}: expected (B, D) features, got {shape}; give the model '
            "a pooling neck (mmpretrain: neck=dict(type='GlobalAveragePooling'"
            '))')
    return feats


def timm_features(model: nn.Module, images: torch.Tensor,
                  logits: bool = False
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(pre_logits (B, D), logits (B, C) or None)`` of a timm model from
    one ``forward_features`` (``forward_head`` with and without
    ``pre_logits``)."""
    tokens = model.forward_features(images)
    pre = _as_matrix(model.forward_head(tokens, pre_logits=True),
                     'timm forward_head')
    out = _as_matrix(model.forward_head(tokens), 'timm forward_head') \
        if logits else None
    return pre, out


def mmpretrain_features(model: nn.Module, images: torch.Tensor,
                        logits: bool = False
                        ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(pre_logits (B, D), logits (B, C) or None)`` of an mmpretrain
    ``ImageClassifier`` from one backbone and neck forward: the head's
    ``pre_logits`` and output of ``extract_feat(images, stage='neck')``
    (without a head: its last neck output, and no logits)."""
    feats = model.extract_feat(images, stage='neck')
    if not getattr(model, 'with_head', False):
        return _as_matrix(feats, 'mmpretrain extract_feat'), None
    pre = _as_matrix(model.head.pre_logits(feats), 'mmpretrain pre_logits')
    out = _as_matrix(model.head(feats), 'mmpretrain head') if logits \
        else None
    return pre, out


# --------------------------------------------------------- preprocessing
def timm_data_config(model: nn.Module) -> dict:
    """timm's ``resolve_data_config`` of ``model`` (its ``pretrained_cfg``):
    ``input_size``, ``interpolation``, ``mean``, ``std`` (0-1 scale, RGB),
    ``crop_pct``, ``crop_mode``."""
    timm = import_timm()
    return dict(timm.data.resolve_data_config({}, model=model))


def preprocessor_from_data_config(data_config: dict) -> dict:
    """``dict(mean, std)`` on mmpretrain's 0-255 scale from timm's data
    config (``mean = std = 0.5`` for timm's ImageNet-21k ViTs gives
    127.5)."""
    return dict(
        mean=[255.0 * float(m) for m in data_config['mean']],
        std=[255.0 * float(s) for s in data_config['std']])


def timm_eval_pipeline(data_config: dict, load: bool = True) -> List[dict]:
    """timm's evaluation preprocessing (``create_transform(...,
    is_training=False)``) as mmpretrain transforms.

    ``crop_mode='center'`` (timm's default): the shorter side resized to
    ``floor(size / crop_pct)`` (PIL, the data config's interpolation), then
    a centre crop of ``size``; ``'squash'``: both sides resized to
    ``floor(size / crop_pct)``, then the crop. Normalisation is the data
    preprocessor's (:func:`preprocessor_from_data_config`).

    Args:
        data_config: :func:`timm_data_config`'s dict.
        load: start with ``CheckedLoadImageFromFile`` (image files); False
            for datasets of decoded arrays (mmpretrain's CIFAR).

    Returns:
        The pipeline, ending with ``PackInputs``.
    """
    height, width = (int(v) for v in data_config['input_size'][-2:])
    crop_pct = float(data_config.get('crop_pct') or 0.875)
    mode = data_config.get('crop_mode') or 'center'
    interpolation = data_config.get('interpolation') or 'bilinear'
    if interpolation not in ('bilinear', 'bicubic', 'nearest', 'lanczos'):
        raise ValueError(f'timm_eval_pipeline: interpolation '
                         f'{interpolation!r} has no PIL equivalent here')
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    resize = dict(backend='pillow', interpolation=interpolation)
    if mode == 'squash' or (mode == 'center' and scale[0] != scale[1]):
        resize.update(type='Resize', scale=(scale[1], scale[0]))
    elif mode == 'center':
        resize.update(type='ResizeEdge', scale=scale[0], edge='short')
    else:
        raise ValueError(f"timm_eval_pipeline: crop_mode {mode!r} is not "
                         "supported ('center' or 'squash')")
    pipeline = [dict(type='CheckedLoadImageFromFile')] if load else []
    crop = height if height == width else (width, height)
    pipeline += [resize, dict(type='CenterCrop', crop_size=crop),
                 dict(type='PackInputs')]
    return pipeline
