"""Build openai-clip ``CLIP`` modules by architecture name.

``build_clip(arch, pretrained)`` returns an fp32 :class:`clip.model.CLIP`:

* ``pretrained=None``: random initialisation (CLIP's own init);
* ``pretrained='openai'``: OpenAI's weights for ``arch`` through
  ``clip.load`` (downloads into ``download_root`` where internet exists);
* ``pretrained='<path>'``: a local OpenAI ``.pt`` TorchScript archive, or a
  plain state-dict file (``.pt``/``.pth``; a ``state_dict`` /
  ``model_state_dict`` wrapper and ``module.`` / ``clip.`` prefixes are
  accepted), loaded with ``weights_only=True``.

Mixed precision comes from MMEngine's AMP, so parameters stay fp32 (unlike
``clip.load``'s fp16 conversion on GPU).
"""
import hashlib
import logging
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import clip
import torch
from clip.model import CLIP
from mmengine.logging import print_log

from ...utils.cache import mark_used
from ...utils.checkpoint import atomic_torch_save, state_dict_mismatch

# name -> CLIP(...) keyword arguments. The OpenAI entries mirror the shapes of
# the published checkpoints; the ``tiny-*`` entries are small models for
# tests and the CPU demo.
CLIP_ARCHS: Dict[str, dict] = {
    'RN50': dict(embed_dim=1024, image_resolution=224,
                 vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, transformer_width=512,
                 transformer_heads=8, transformer_layers=12),
    'RN101': dict(embed_dim=512, image_resolution=224,
                  vision_layers=(3, 4, 23, 3), vision_width=64,
                  vision_patch_size=None, transformer_width=512,
                  transformer_heads=8, transformer_layers=12),
    'RN50x4': dict(embed_dim=640, image_resolution=288,
                   vision_layers=(4, 6, 10, 6), vision_width=80,
                   vision_patch_size=None, transformer_width=640,
                   transformer_heads=10, transformer_layers=12),
    'RN50x16': dict(embed_dim=768, image_resolution=384,
                    vision_layers=(6, 8, 18, 8), vision_width=96,
                    vision_patch_size=None, transformer_width=768,
                    transformer_heads=12, transformer_layers=12),
    'RN50x64': dict(embed_dim=1024, image_resolution=448,
                    vision_layers=(3, 15, 36, 10), vision_width=128,
                    vision_patch_size=None, transformer_width=1024,
                    transformer_heads=16, transformer_layers=12),
    'ViT-B/32': dict(embed_dim=512, image_resolution=224, vision_layers=12,
                     vision_width=768, vision_patch_size=32,
                     transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    'ViT-B/16': dict(embed_dim=512, image_resolution=224, vision_layers=12,
                     vision_width=768, vision_patch_size=16,
                     transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    'ViT-L/14': dict(embed_dim=768, image_resolution=224, vision_layers=24,
                     vision_width=1024, vision_patch_size=14,
                     transformer_width=768, transformer_heads=12,
                     transformer_layers=12),
    'ViT-L/14@336px': dict(embed_dim=768, image_resolution=336,
                           vision_layers=24, vision_width=1024,
                           vision_patch_size=14, transformer_width=768,
                           transformer_heads=12, transformer_layers=12),
    # 2-layer width-64 ViT at 32 px (patch 8) with a 2-layer text tower.
    'tiny-vit-32px': dict(embed_dim=64, image_resolution=32, vision_layers=2,
                          vision_width=64, vision_patch_size=8,
                          transformer_width=64, transformer_heads=2,
                          transformer_layers=2, context_length=24),
    # A (1,1,1,1) ResNet image tower of width 16 at 32 px with the same text
    # tower: learns shapes from scratch much faster than the tiny ViT (demo).
    'tiny-rn-32px': dict(embed_dim=64, image_resolution=32,
                         vision_layers=(1, 1, 1, 1), vision_width=16,
                         vision_patch_size=None, transformer_width=64,
                         transformer_heads=2, transformer_layers=2,
                         context_length=24),
}
_DEFAULTS = dict(context_length=77, vocab_size=49408)
# non-parameter entries stored in OpenAI's checkpoints
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
_WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model')
# prefixes of DataParallel, our classifier and common training wrappers
_PREFIXES = ('module.', 'clip.', 'model.')


def list_clip_archs() -> List[str]:
    """Names accepted by :func:`build_clip`."""
    return list(CLIP_ARCHS)


def clip_arch_kwargs(arch: str) -> dict:
    """``clip.model.CLIP`` keyword arguments of architecture ``arch``."""
    if arch not in CLIP_ARCHS:
        raise KeyError(f'Unknown CLIP architecture {arch!r}; choose one of '
                       f'{list_clip_archs()}')
    return {**_DEFAULTS, **CLIP_ARCHS[arch]}


def clean_clip_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """openai-clip parameter names: wrapper prefixes (``module.``,
    ``clip.``, ``model.``, also repeated) and OpenAI's non-parameter entries
    removed."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        if key not in _OPENAI_EXTRA_KEYS:
            out[key] = value
    return out


def torchscript_state_dict(path: str) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict of a TorchScript archive (OpenAI's ``.pt`` files;
    reading one runs no pickled code), ``None`` for other files."""
    try:
        return dict(torch.jit.load(path, map_location='cpu').state_dict())
    except RuntimeError:
        return None


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read CLIP weights from a local file into a plain state dict.

    Accepts OpenAI's TorchScript archives (read with ``torch.jit.load``,
    which runs no pickled code) and pickled state dicts, which are read
    with ``torch.load(weights_only=True)``. Wrappers (``state_dict``,
    ``model_state_dict``, ``model``), DataParallel's ``module.`` prefix and
    our classifier's ``clip.`` prefix are removed, as are OpenAI's
    non-parameter entries.
    """
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'CLIP weights file not found: {path}')
    state_dict = torchscript_state_dict(path)
    if state_dict is None:
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
    for key in _WRAPPER_KEYS:
        if isinstance(state_dict, dict) and isinstance(
                state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    if not isinstance(state_dict, dict):
        raise TypeError(f'{path} does not hold a state dict '
                        f'(got {type(state_dict).__name__})')
    return clean_clip_state_dict(state_dict)


def load_clip_weights(model: CLIP, state_dict: Dict[str, torch.Tensor],
                      source: str = 'state dict') -> None:
    """Load ``state_dict`` into ``model`` strictly, naming mismatches."""
    problem = state_dict_mismatch(model.state_dict(), state_dict)
    if problem:
        raise RuntimeError(
            f'{source} does not match this CLIP architecture; {problem}')
    model.load_state_dict(state_dict, strict=True)


def openai_weights_file(arch: str,
                        download_root: Optional[str] = None) -> tuple:
    """``(url, local path)`` of OpenAI's weights for ``arch``: where
    ``clip.load`` downloads them from and where it looks for them
    (``download_root``, default ``~/.cache/clip``)."""
    url = getattr(clip.clip, '_MODELS', {}).get(arch, '')
    root = osp.expanduser(download_root or osp.join('~', '.cache', 'clip'))
    return url, osp.join(root, osp.basename(url) if url else '')


def _load_openai(arch: str, download_root: Optional[str]):
    """``clip.load`` on the CPU, with a download failure explained: which
    file to fetch, and where to put it or how to point the config at it."""
    try:
        return clip.load(
            arch, device='cpu', jit=False, download_root=download_root)
    except (OSError, RuntimeError, ValueError) as err:
        # urllib's URLError and socket errors are OSErrors; clip raises
        # RuntimeError on a checksum mismatch of a partial download
        url, path = openai_weights_file(arch, download_root)
        raise OSError(
            f'Cannot get OpenAI\'s {arch} weights ({type(err).__name__}: '
            f'{err}). Without internet, download {url} on another machine '
            f'and put it at {path} (or in the folder given by '
            f'model.download_root), or pass '
            f'model.pretrained=/path/to/{osp.basename(path)}') from err


def build_clip(arch: str = 'ViT-B/16',
               pretrained: Optional[str] = None,
               download_root: Optional[str] = None) -> CLIP:
    """Return an fp32 openai-clip ``CLIP`` of architecture ``arch``.

    Args:
        arch: one of :func:`list_clip_archs` (OpenAI names such as
            ``'ViT-B/16'``, ``'RN50'``, or ``'tiny-vit-32px'``).
        pretrained: ``None`` (random init), ``'openai'`` (OpenAI's weights
            for ``arch`` via ``clip.load``) or a local file path.
        download_root: cache directory for ``'openai'`` downloads
            (clip's default ``~/.cache/clip`` when ``None``).
    """
    model = CLIP(**clip_arch_kwargs(arch))
    if pretrained is None:
        return model.float()
    if pretrained == 'openai':
        if arch not in clip.available_models():
            raise KeyError(f'OpenAI publishes no weights for {arch!r}; '
                           f'available: {clip.available_models()}')
        source = _load_openai(arch, download_root)
        state_dict = source.state_dict()
        name = f'OpenAI weights {arch}'
    else:
        state_dict = load_clip_state_dict(pretrained)
        name = str(pretrained)
    load_clip_weights(model, state_dict, name)
    return model.float()


def tokenize(texts: Union[str, Sequence[str]],
             context_length: int) -> torch.Tensor:
    """Tokenise ``texts`` with clip's BPE tokenizer into ``(N, L)`` int64.

    Raises a ``ValueError`` naming the first text longer than
    ``context_length`` tokens instead of silently truncating it.
    """
    if isinstance(texts, str):
        texts = [texts]
    try:
        return clip.tokenize(list(texts), context_length=context_length).long()
    except RuntimeError as err:
        tokenizer = clip.simple_tokenizer.SimpleTokenizer()
        for text in texts:
            if len(tokenizer.encode(text)) + 2 > context_length:
                raise ValueError(
                    f'Prompt {text!r} is longer than the context length '
                    f'{context_length} of the text encoder') from err
        raise


#: bumped whenever the token-cache content changes
TOKEN_CACHE_VERSION = 1


def cached_tokenize(prompts: Sequence[str],
                    context_length: int,
                    cache_dir: Union[None, str, Path] = None) -> torch.Tensor:
    """:func:`tokenize`, with the result stored in ``cache_dir``.

    Tokenising ~70,000 prompts (NegLabel's candidates) takes seconds of
    CPU time and does not depend on the model, so the token ids are kept
    in ``cache_dir/tokens-<sha256 of the prompts and length>.pt`` (written
    atomically; an unreadable file is tokenised again). ``cache_dir=None``
    tokenises without a cache.

    Returns:
        int64 ``(N, context_length)`` token ids.
    """
    if cache_dir is None:
        return tokenize(prompts, context_length)
    hasher = hashlib.sha256(
        f'{TOKEN_CACHE_VERSION}:{context_length}'.encode())
    for prompt in prompts:
        hasher.update(prompt.encode('utf-8') + b'\0')
    path = Path(cache_dir) / f'tokens-{hasher.hexdigest()}.pt'
    if path.is_file():
        try:
            tokens = torch.load(path, map_location='cpu', weights_only=True)
            if tuple(tokens.shape) == (len(prompts), context_length):
                mark_used(path)
                return tokens.long()
        except Exception as err:  # corrupt: tokenise again
            print_log(f'ignoring unreadable token cache {path}: {err!r}',
                      logger='current', level=logging.WARNING)
    tokens = tokenize(prompts, context_length)
    try:
        atomic_torch_save(tokens.int(), str(path))
    except OSError as err:
        print_log(f'could not write token cache {path}: {err!r}',
                  logger='current', level=logging.WARNING)
    return tokens
