"""A faster, numerically identical forward of openai-clip's ViT image tower.

``VisionTransformer.forward`` returns ``ln_post`` of the class token only.
In the last block every other position's output is thrown away, so
:func:`encode_image_vit` computes that block's attention query, output
projection and MLP for the class token alone (keys and values still come
from all positions): for ViT-B/16 this skips about 6% of the tower's
FLOPs. All blocks run batch-first through
:func:`~cma_ood.models.clip_attention.self_attention` (SDPA) instead of
``nn.MultiheadAttention``'s sequence-first layout, and the patch embedding
(a convolution whose stride equals its kernel) runs as one matrix product
over the image's patches, which is several times faster than cuDNN's
convolution for this shape. Gradients flow to the
same parameters; the result equals ``visual(images)`` up to
floating-point rounding (``tests/test_models/test_multimodal/test_clip_vision.py``).

Pre-projection features (PLP's ``proj=None``): :func:`encode_image_features`
returns either the embedding or the tower's output *before* its final
projection, from the fast forward or from CLIP's own; :class:`FeatureTap`
captures the latter during a classifier's forward, for scorers fitted on
cached pre-projection features. For a ViT the pre-projection feature is
``ln_post`` of the class token (``width``-d) and ``feature @ proj`` is the
embedding. openai-clip's ``ModifiedResNet`` (like open_clip's) has no
separate projection matrix -- the attention pool's ``c_proj`` is part of the
pool and open_clip's ``proj = None`` leaves it in place -- so for ResNet
towers the pre-projection feature *is* the embedding.

Local (patch) features (GL-MCM): :func:`vit_local_features` computes them
from the input tokens of the last block, which :class:`LastBlockTap`
captures during either forward (fast or CLIP's own), so a scorer needs no
second image forward.
"""
import weakref
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .clip_attention import self_attention
from .open_clip_builder import (open_clip_pre_projection_module,
                                open_clip_pre_projection_output,
                                open_clip_projection)


def is_clip_vit(visual: nn.Module) -> bool:
    """Whether ``visual`` is openai-clip's ``VisionTransformer``."""
    from clip.model import VisionTransformer
    return isinstance(visual, VisionTransformer)


def patch_embed(conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
    """``conv(images)`` as batch-first tokens ``(B, gh * gw, out_channels)``
    (row-major patch order, as ``conv(images).flatten(2).transpose(1, 2)``).

    A patchifying convolution (kernel == stride, no padding, dilation or
    groups) is one matrix product over non-overlapping patches; any other
    convolution runs as it is.
    """
    patch = conv.kernel_size
    if (conv.stride != patch or conv.padding not in ((0, 0), 'valid')
            or conv.dilation != (1, 1) or conv.groups != 1):
        return conv(images).flatten(2).transpose(1, 2)
    batch, channels, height, width = images.shape
    gh, gw = height // patch[0], width // patch[1]
    # pixels the convolution never reaches (size not a multiple) are cut
    patches = images[:, :, :gh * patch[0], :gw * patch[1]].reshape(
        batch, channels, gh, patch[0], gw, patch[1]).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, gh * gw, channels * patch[0] * patch[1])
    return F.linear(patches, conv.weight.reshape(conv.out_channels, -1),
                    conv.bias)


def encode_image_vit(visual: nn.Module, images: torch.Tensor,
                     project: bool = True) -> torch.Tensor:
    """``visual(images)`` for an openai-clip ``VisionTransformer``.

    Args:
        visual: the ``VisionTransformer`` (``clip_model.visual``).
        images: ``(B, 3, R, R)`` preprocessed images, ``R`` its
            ``input_resolution``.
        project: apply the tower's projection ``proj``; ``False`` returns
            the pre-projection features ``ln_post(class token)``.

    Returns:
        ``(B, output_dim)`` image embeddings (``(B, width)`` if the tower
        has no projection or ``project`` is False).
    """
    # (B, grid ** 2, width)
    x = patch_embed(visual.conv1, images.type(visual.conv1.weight.dtype))
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = x + self_attention(block.attn, block.ln_1(x))
        x = x + block.mlp(block.ln_2(x))
    # last block: only the class token's output is used
    x = x[:, :1] + self_attention(last.attn, last.ln_1(x), num_queries=1)
    x = x + last.mlp(last.ln_2(x))
    x = visual.ln_post(x[:, 0])
    if project and visual.proj is not None:
        x = x @ visual.proj
    return x


# ---------------------------------------------------------------------------
# pre-projection features
#: the image features a feature file stores and the probes / feature-space
#: scorers use: the tower's output before its projection, or the embedding
IMAGE_FEATURES = ('pre_projection', 'embedding')


def check_image_feature(feature, who: str = 'feature') -> str:
    """Validate a feature kind (:data:`IMAGE_FEATURES`)."""
    if feature not in IMAGE_FEATURES:
        raise ValueError(f"{who}: feature must be 'pre_projection' or "
                         f"'embedding', got {feature!r}")
    return feature


def projection_matrix(visual: nn.Module) -> Optional[torch.Tensor]:
    """The tower's final projection ``(width, output_dim)``: a ViT's
    ``proj``; ``None`` for ResNet towers (see the module doc) and for a ViT
    without projection. open_clip towers: :func:`~.open_clip_builder.
    open_clip_projection` (a timm tower's linear head, as a matrix)."""
    if is_clip_vit(visual):
        return visual.proj
    return open_clip_projection(visual)


def pre_projection_module(visual: nn.Module) -> nn.Module:
    """The module whose output is the pre-projection feature: a ViT's
    ``ln_post`` (called on the class token by CLIP's forward and by
    :func:`encode_image_vit`), the whole tower for a ResNet; open_clip
    towers: :func:`~.open_clip_builder.open_clip_pre_projection_module`."""
    return visual.ln_post if is_clip_vit(visual) \
        else open_clip_pre_projection_module(visual)


def pre_projection_output(visual: nn.Module,
                          output: torch.Tensor) -> torch.Tensor:
    """The pre-projection feature ``(B, width)`` from the output of
    :func:`pre_projection_module` (open_clip's ViT normalises all tokens
    before pooling; everything else gives it as it is)."""
    return open_clip_pre_projection_output(visual, output)


def image_feature_dim(visual: nn.Module, feature: str) -> int:
    """Dimension of ``feature`` (:data:`IMAGE_FEATURES`) of a tower."""
    check_image_feature(feature, 'image_feature_dim')
    proj = projection_matrix(visual)
    if feature == 'pre_projection' and proj is not None:
        return int(proj.shape[0])
    return int(visual.output_dim)


def encode_image_features(clip_model: nn.Module,
                          images: torch.Tensor,
                          feature: str = 'pre_projection',
                          fast: bool = True) -> torch.Tensor:
    """Image features ``(B, D)`` of preprocessed images, un-normalised.

    Args:
        clip_model: an openai-clip ``CLIP``.
        images: ``(B, 3, R, R)``.
        feature: ``'embedding'`` (``clip_model.encode_image``) or
            ``'pre_projection'`` (see the module doc).
        fast: run a ViT tower through :func:`encode_image_vit`; otherwise
            (and always for ResNet towers) CLIP's own forward runs, and the
            pre-projection feature is read off its ``ln_post`` call.
    """
    check_image_feature(feature, 'encode_image_features')
    visual = clip_model.visual
    if fast and is_clip_vit(visual):
        return encode_image_vit(visual, images,
                                project=feature == 'embedding')
    if feature == 'embedding' or projection_matrix(visual) is None:
        return clip_model.encode_image(images)
    module = pre_projection_module(visual)
    captured = []
    handle = module.register_forward_hook(
        lambda module, args, output: captured.append(output))
    try:
        clip_model.encode_image(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f'{type(module).__name__} ran {len(captured)} times in one '
            'forward of the image tower; expected once')
    return pre_projection_output(visual, captured[0])


class FeatureTap:
    """Keeps the pre-projection features of the latest forward of an image
    tower (a forward hook on :func:`pre_projection_module`).

    Every forward replaces :attr:`value` (detached, ``(B, D)``) and
    increments :attr:`step`. Use :func:`feature_tap` to share one tap per
    tower. The tap holds no reference to the tower.
    """

    def __init__(self, visual: nn.Module):
        self.value: Optional[torch.Tensor] = None
        self.step = 0
        self._visual = weakref.ref(visual)
        self._handle = pre_projection_module(visual).register_forward_hook(
            self._hook)

    def _hook(self, module, args, output):
        self.value = pre_projection_output(self._visual(), output.detach())
        self.step += 1

    def remove(self) -> None:
        """Unregister the hook."""
        self._handle.remove()


_TAPS: 'weakref.WeakKeyDictionary[nn.Module, FeatureTap]' = \
    weakref.WeakKeyDictionary()


def feature_tap(visual: nn.Module) -> FeatureTap:
    """The :class:`FeatureTap` of ``visual``, created on first use."""
    tap = _TAPS.get(visual)
    if tap is None:
        tap = _TAPS[visual] = FeatureTap(visual)
    return tap


# ---------------------------------------------------------------------------
# local (patch) features of the last block: GL-MCM
def _last_block(visual: nn.Module) -> nn.Module:
    if not is_clip_vit(visual):
        raise ValueError(
            'local (patch) features need an openai-clip VisionTransformer '
            f'image tower, got {type(visual).__name__}; use a ViT arch '
            "(e.g. 'ViT-B/16')")
    return visual.transformer.resblocks[-1]


def vit_local_features(visual: nn.Module,
                       tokens: torch.Tensor,
                       normalize: bool = True) -> torch.Tensor:
    """GL-MCM's local features from the input tokens of the last block.

    The value path of the tower's last residual block, without the
    query-key attention (GL-MCM's ``clip/model.py``): for the block input
    ``x``, ``v = out_proj(W_v ln_1(x) + b_v) + x``, then
    ``v = v + mlp(ln_2(v))``; ``ln_post(v)`` of every patch token (the
    class token is dropped), projected by ``proj`` and, with ``normalize``,
    L2-normalised per patch. The class token of CLIP's own output (the
    global embedding) is not part of it.

    Args:
        visual: an openai-clip ``VisionTransformer``.
        tokens: ``(B, L, width)`` batch-first input of the last residual
            block, ``L = 1 + grid ** 2`` (class token first), e.g. from
            :class:`LastBlockTap`; computed in the tower's parameter dtype.
        normalize: L2-normalise each patch feature.

    Returns:
        ``(B, L - 1, output_dim)`` patch features in row-major patch order
        (``(B, L - 1, width)`` for a tower without projection).
    """
    last = _last_block(visual)
    if tokens.dim() != 3 or tokens.shape[-1] != last.ln_1.normalized_shape[0]:
        raise ValueError(
            'tokens must be the (B, L, width) input of the last block with '
            f'width {last.ln_1.normalized_shape[0]}, got shape '
            f'{tuple(tokens.shape)}')
    attn = last.attn
    dim = tokens.shape[-1]
    x = tokens.to(attn.in_proj_weight.dtype)
    w_v = attn.in_proj_weight[2 * dim:]
    b_v = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * dim:]
    v = attn.out_proj(F.linear(last.ln_1(x), w_v, b_v)) + x
    v = v + last.mlp(last.ln_2(v))
    v = visual.ln_post(v[:, 1:])
    if visual.proj is not None:
        v = v @ visual.proj
    return F.normalize(v, dim=-1) if normalize else v


def vit_class_token_embedding(visual: nn.Module,
                              tokens: torch.Tensor) -> torch.Tensor:
    """The tower's output ``(B, output_dim)`` (un-normalised) recomputed
    from the input tokens ``(B, L, width)`` of its last block, as
    :func:`encode_image_vit` does (class-token query only); a check that
    captured tokens belong to a batch of embeddings."""
    last = _last_block(visual)
    x = tokens.to(last.attn.in_proj_weight.dtype)
    x = x[:, :1] + self_attention(last.attn, last.ln_1(x), num_queries=1)
    x = x + last.mlp(last.ln_2(x))
    x = visual.ln_post(x[:, 0])
    return x if visual.proj is None else x @ visual.proj


class LastBlockTap:
    """Keeps the input tokens of the last residual block of an openai-clip
    ViT from the latest forward of the tower, batch-first ``(B, L, width)``
    and detached, for either forward:

    * CLIP's own ``visual(images)`` calls the block with sequence-first
      tokens ``(L, B, width)``: a forward pre-hook on the block captures
      them (transposed);
    * :func:`encode_image_vit` does not call the block but its parts; its
      first call, ``last.ln_1(x)``, gets the batch-first block input: a
      forward pre-hook on ``ln_1`` captures it. Inside CLIP's own block
      forward ``ln_1`` gets the very tensor the block got, which is
      recognised and not captured twice.

    Every captured forward replaces :attr:`value` and increments
    :attr:`step`. Use :func:`last_block_tap` to share one tap per tower.
    The tap holds no reference to the tower.
    """

    def __init__(self, visual: nn.Module):
        last = _last_block(visual)
        self.value: Optional[torch.Tensor] = None
        self.step = 0
        self._block_input = None
        self._handles = [
            last.register_forward_pre_hook(self._block_hook),
            last.ln_1.register_forward_pre_hook(self._ln_1_hook),
        ]

    def _block_hook(self, module, args):
        x = args[0]
        self._block_input = x
        self.value = x.detach().transpose(0, 1)
        self.step += 1

    def _ln_1_hook(self, module, args):
        x = args[0]
        if x is self._block_input:  # inside CLIP's block forward
            self._block_input = None
            return
        self._block_input = None
        self.value = x.detach()
        self.step += 1

    def remove(self) -> None:
        """Unregister the hooks."""
        for handle in self._handles:
            handle.remove()


_BLOCK_TAPS: 'weakref.WeakKeyDictionary[nn.Module, LastBlockTap]' = \
    weakref.WeakKeyDictionary()


def last_block_tap(visual: nn.Module) -> LastBlockTap:
    """The :class:`LastBlockTap` of ``visual``, created on first use."""
    tap = _BLOCK_TAPS.get(visual)
    if tap is None:
        tap = _BLOCK_TAPS[visual] = LastBlockTap(visual)
    return tap


def encode_image_local_vit(visual: nn.Module,
                           images: torch.Tensor,
                           fast: bool = True,
                           normalize: bool = True):
    """Global embeddings and GL-MCM local features of one image forward.

    Args:
        visual: an openai-clip ``VisionTransformer``.
        images: ``(B, 3, R, R)`` preprocessed images.
        fast: run :func:`encode_image_vit`; ``False``: CLIP's own forward.
        normalize: L2-normalise the global embeddings and each patch
            feature.

    Returns:
        ``(global (B, output_dim), local (B, grid ** 2, output_dim))``:
        the tower's output and :func:`vit_local_features` of the input
        tokens of its last block, captured during the same forward.
    """
    tap = LastBlockTap(visual)
    try:
        glob = encode_image_vit(visual, images) if fast else visual(images)
    finally:
        tap.remove()
    if tap.step != 1:
        raise RuntimeError(f'the last block ran {tap.step} times in one '
                           'forward of the image tower; expected once')
    local = vit_local_features(visual, tap.value, normalize=normalize)
    return (F.normalize(glob, dim=-1) if normalize else glob), local
