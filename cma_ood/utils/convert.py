"""Convert published CLIP checkpoints into cma_ood checkpoints.

Sources (:func:`read_source`):

* the CMA release layout ``{'epoch', 'model_state_dict',
  'optimizer_state_dict'}``, whose keys are openai-clip ``CLIP`` parameter
  names prefixed ``module.`` by ``DataParallel``;
* OpenAI's CLIP ``.pt`` files, TorchScript archives read with
  ``torch.jit.load`` (which runs no pickled code);
* plain or MMEngine-wrapped state dicts of ``CLIP`` / our classifier.

Pickled files are read with ``torch.load(weights_only=True)`` and the
allow-list of :mod:`cma_ood.utils.checkpoint` (``trust=True`` opts out). The output (:func:`convert_checkpoint`) is what ``tools/test.py``
and ``load_from`` load into ``MultiModalClassifier``: ``{'state_dict':
{'clip.<name>': tensor}, 'meta': {...}}``, tensors kept in their dtype.
"""
import os.path as osp
from functools import lru_cache
from typing import Dict, Optional, Tuple

import torch

from cma_ood.models.multimodal.clip_builder import (CLIP_ARCHS, clean_clip_state_dict,
                                         clip_arch_kwargs,
                                         torchscript_state_dict)
from .checkpoint import (atomic_torch_save, safe_torch_load,
                         state_dict_mismatch)


def unwrap_state_dict(obj, path: str = 'checkpoint') -> Tuple[dict, dict]:
    """Split a loaded checkpoint into ``(state_dict, info)``.

    ``info['source_format']`` is ``'cma'`` (``model_state_dict``, with the
    release's ``epoch``), ``'mmengine'`` (``state_dict`` and ``meta``) or
    ``'state_dict'`` (a bare mapping of tensors).
    """
    if not isinstance(obj, dict):
        raise TypeError(f'{path} holds a {type(obj).__name__}, not a '
                        'checkpoint dict or a TorchScript archive')
    info: dict = {}
    if isinstance(obj.get('model_state_dict'), dict):
        state, info['source_format'] = obj['model_state_dict'], 'cma'
        if isinstance(obj.get('epoch'), int):
            info['epoch'] = obj['epoch']
    elif isinstance(obj.get('state_dict'), dict):
        state, info['source_format'] = obj['state_dict'], 'mmengine'
    elif isinstance(obj.get('model'), dict):
        state, info['source_format'] = obj['model'], 'state_dict'
    else:
        state, info['source_format'] = obj, 'state_dict'
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'{path}: no state dict found (entries that are not '
                        f'tensors: {bad[:5]}); expected model_state_dict, '
                        'state_dict or a mapping of tensors')
    return state, info


@lru_cache(maxsize=None)
def arch_shapes(arch: str) -> Dict[str, torch.Tensor]:
    """The state dict of the CLIP architecture ``arch`` as data-less tensors
    on the meta device (keys and shapes only, nothing allocated)."""
    from clip.model import CLIP
    with torch.device('meta'):
        model = CLIP(**clip_arch_kwargs(arch))
    return dict(model.state_dict())


def infer_arch(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """The name in ``CLIP_ARCHS`` whose parameters ``state`` fits exactly."""
    for arch in CLIP_ARCHS:
        if state_dict_mismatch(arch_shapes(arch), state) is None:
            return arch
    return None


def closest_arch(state: Dict[str, torch.Tensor]) -> str:
    """The architecture sharing the most (key, shape) pairs with ``state``."""
    have = {(k, tuple(v.shape)) for k, v in state.items()}
    return max(
        CLIP_ARCHS,
        key=lambda a: len(have & {(k, tuple(v.shape))
                                  for k, v in arch_shapes(a).items()}))


def read_source(path: str,
                trust: bool = False) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read CLIP weights (openai-clip names) and a description from any
    supported source file (``trust``: full unpickling, see
    :func:`~cma_ood.utils.checkpoint.safe_torch_load`)."""
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint to convert not found: {path}')
    state = torchscript_state_dict(path)
    if state is not None:
        info = dict(source_format='openai-torchscript')
    else:
        state, info = unwrap_state_dict(
            safe_torch_load(path, map_location='cpu', trust=trust), path)
    return clean_clip_state_dict(state), info


def convert_checkpoint(src: str,
                       dst: str,
                       arch: Optional[str] = None,
                       trust: bool = False) -> dict:
    """Convert ``src`` into a cma_ood checkpoint at ``dst``; return its meta.

    The weights must fit a CLIP architecture of
    :data:`~cma_ood.models.multimodal.clip_builder.CLIP_ARCHS` exactly (``arch``, or
    any when ``None``); the error otherwise names the mismatching keys. The
    output is written atomically.
    """
    state, info = read_source(src, trust=trust)
    if arch is not None:
        problem = state_dict_mismatch(arch_shapes(arch), state)
        if problem:
            raise ValueError(f'{src} does not hold CLIP {arch} weights: '
                             f'{problem}')
    else:
        arch = infer_arch(state)
        if arch is None:
            closest = closest_arch(state)
            raise ValueError(
                f'{src} fits no known CLIP architecture; against the '
                f'closest, {closest}: '
                f'{state_dict_mismatch(arch_shapes(closest), state)}')
    meta = dict(info, arch=arch, converted_from=osp.basename(src))
    checkpoint = dict(
        state_dict={f'clip.{k}': v for k, v in state.items()}, meta=meta)
    atomic_torch_save(checkpoint, dst)
    return meta
