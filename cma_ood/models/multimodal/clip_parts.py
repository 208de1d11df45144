"""Which parts of a CLIP model (openai-clip's ``CLIP``, open_clip's
``CLIP`` or ``CustomTextCLIP``) make up its text tower, and its joint
embedding size.

openai-clip's ``CLIP`` and open_clip's ``CLIP`` keep the text tower at the
top level (``token_embedding``, ``positional_embedding``, ``transformer``,
``ln_final``, ``text_projection``); open_clip's ``CustomTextCLIP`` (Hugging
Face text towers) keeps it in ``text``. ``visual`` is the image tower of
all three; ``logit_scale`` (and open_clip's ``logit_bias``) belong to
neither tower.
"""
from typing import Iterator, Tuple

import torch
import torch.nn as nn

#: top-level CLIP modules/parameters that make up the text tower
TEXT_TOWER_KEYS = ('token_embedding', 'positional_embedding', 'transformer',
                   'ln_final', 'text_projection', 'text')


def text_tower_parameters(
        clip_model: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the text tower's parameters."""
    for name, param in clip_model.named_parameters():
        if name.split('.', 1)[0] in TEXT_TOWER_KEYS:
            yield name, param


def clip_embed_dim(clip_model: nn.Module) -> int:
    """Size ``D`` of the joint embedding space (the text tower's output)."""
    text = getattr(clip_model, 'text', None)
    if isinstance(text, nn.Module) and hasattr(text, 'output_dim'):
        return int(text.output_dim)
    proj = clip_model.text_projection
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    # no projection: the text transformer's width
    return int(clip_model.ln_final.normalized_shape[0])
