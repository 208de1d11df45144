"""GL-MCM's local features of openai-clip's ResNet image towers.

``ModifiedResNet`` ends in an attention pool: the mean of the last feature
map, as the query, attends over the map's positions (with positional
embeddings) and ``c_proj`` projects the result. GL-MCM's ResNet variant
(its ``clip/model.py``, ``AttentionPool2d.forward``) takes as the local
feature of each position ``c_proj(v_proj(x))`` of the feature map ``x``
itself: the value path of that pool, without positional embeddings or
attention. :class:`AttnPoolTap` keeps the pool's input from the tower's
forward, so the local features come from the same forward as the global
embedding.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def is_clip_resnet(visual: nn.Module) -> bool:
    """Whether ``visual`` is openai-clip's ``ModifiedResNet``."""
    from clip.model import ModifiedResNet
    return isinstance(visual, ModifiedResNet)


def _attnpool(visual: nn.Module) -> nn.Module:
    if not is_clip_resnet(visual):
        raise ValueError(
            'ResNet local features need an openai-clip ModifiedResNet image '
            f'tower, got {type(visual).__name__}')
    return visual.attnpool


def resnet_local_features(visual: nn.Module,
                          feature_map: torch.Tensor,
                          normalize: bool = True) -> torch.Tensor:
    """GL-MCM's local features from the input of the attention pool.

    Args:
        visual: an openai-clip ``ModifiedResNet``.
        feature_map: ``(B, C, h, w)``, the last stage's output (the
            attention pool's input), e.g. from :class:`AttnPoolTap`.
        normalize: L2-normalise each position's feature.

    Returns:
        ``(B, h * w, output_dim)``: ``c_proj(v_proj(x))`` of every position,
        row-major (GL-MCM's ``x_local``, flattened over the grid).
    """
    pool = _attnpool(visual)
    if feature_map.dim() != 4 or \
            feature_map.shape[1] != pool.v_proj.in_features:
        raise ValueError(
            'feature_map must be the (B, C, h, w) input of the attention '
            f'pool with C = {pool.v_proj.in_features}, got shape '
            f'{tuple(feature_map.shape)}')
    x = feature_map.to(pool.v_proj.weight.dtype).flatten(2).transpose(1, 2)
    x = pool.c_proj(pool.v_proj(x)).float()  # GL-MCM: .float(), then norm
    return F.normalize(x, dim=-1) if normalize else x


def resnet_pooled_embedding(visual: nn.Module,
                            feature_map: torch.Tensor) -> torch.Tensor:
    """The tower's output ``(B, output_dim)`` recomputed from the attention
    pool's input: a check that a captured map belongs to a batch of
    embeddings."""
    pool = _attnpool(visual)
    return pool(feature_map.to(pool.v_proj.weight.dtype))


class AttnPoolTap:
    """Keeps the input ``(B, C, h, w)`` (detached) of the attention pool of
    an openai-clip ResNet from the latest forward of the tower. Every
    forward replaces :attr:`value` and increments :attr:`step`;
    :meth:`remove` unregisters it. The tap holds no reference to the
    tower."""

    def __init__(self, visual: nn.Module):
        self.value: Optional[torch.Tensor] = None
        self.step = 0
        self._handle = _attnpool(visual).register_forward_pre_hook(
            self._hook)

    def _hook(self, module, args):
        self.value = args[0].detach()
        self.step += 1

    def remove(self) -> None:
        """Unregister the hook."""
        self._handle.remove()


def encode_image_local_resnet(visual: nn.Module,
                              images: torch.Tensor,
                              normalize: bool = True):
    """Global embeddings and GL-MCM local features of one forward of an
    openai-clip ResNet tower.

    Returns:
        ``(global (B, output_dim), local (B, h * w, output_dim))``.
    """
    tap = AttnPoolTap(visual)
    try:
        glob = visual(images)
    finally:
        tap.remove()
    if tap.step != 1:
        raise RuntimeError(f'the attention pool ran {tap.step} times in one '
                           'forward of the image tower; expected once')
    local = resnet_local_features(visual, tap.value, normalize=normalize)
    return (F.normalize(glob, dim=-1) if normalize else glob), local
