"""Content hashes of CLIP's towers, used as cache keys and to check that
cached features and fitted baselines match the model they are applied to."""
import hashlib
from typing import Dict

import torch
import torch.nn as nn

from ..multimodal.clip_parts import TEXT_TOWER_KEYS


def text_tower_state(clip_model: nn.Module) -> Dict[str, torch.Tensor]:
    """The text-tower entries of a CLIP state dict (sorted by name)."""
    state = clip_model.state_dict()
    return {
        k: state[k]
        for k in sorted(state) if k.split('.', 1)[0] in TEXT_TOWER_KEYS
    }


def hash_tensors(tensors: Dict[str, torch.Tensor], hasher) -> None:
    """Feed names, dtypes, shapes and raw bytes of ``tensors`` to
    ``hasher``."""
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        hasher.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        hasher.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def image_tower_state(clip_model: nn.Module) -> Dict[str, torch.Tensor]:
    """The image-tower (``visual.*``) entries of a CLIP state dict,
    sorted by name."""
    state = clip_model.state_dict()
    return {k: state[k] for k in sorted(state) if k.startswith('visual.')}


def image_tower_sha256(clip_model: nn.Module) -> str:
    """sha256 of the image tower's parameter and buffer names, dtypes,
    shapes and bytes."""
    hasher = hashlib.sha256()
    hash_tensors(image_tower_state(clip_model), hasher)
    return hasher.hexdigest()


def text_tower_sha256(clip_model: nn.Module) -> str:
    """sha256 of the text tower (token/positional embeddings, transformer,
    final norm, projection)."""
    hasher = hashlib.sha256()
    hash_tensors(text_tower_state(clip_model), hasher)
    return hasher.hexdigest()
