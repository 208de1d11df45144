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

:func:`tokenize` gives ``clip.tokenize``'s token ids, computed faster for
long lists of prompts (:func:`encode_texts`), and :func:`cached_tokenize`
keeps them on disk.
"""
import hashlib
import logging
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import clip
import torch
from clip.model import CLIP
from clip.simple_tokenizer import (SimpleTokenizer, basic_clean,
                                   whitespace_clean)
from mmengine.logging import print_log

from ...utils.cache import mark_used
from ...utils.checkpoint import (atomic_torch_save, state_dict_mismatch,
                                 strip_prefixes)
from .open_clip_builder import (build_open_clip, is_open_clip_arch,
                                open_clip_tokenizer)

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
        key = strip_prefixes(key, _PREFIXES)
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
            ``'ViT-B/16'``, ``'RN50'``, or ``'tiny-vit-32px'``), or an
            open_clip name ``'open_clip:MODEL[/TAG]'`` (an open_clip model
            then, see :mod:`.open_clip_builder`).
        pretrained: ``None`` (random init), ``'openai'`` (OpenAI's weights
            for ``arch`` via ``clip.load``) or a local file path.
        download_root: cache directory for ``'openai'`` downloads
            (clip's default ``~/.cache/clip`` when ``None``).
    """
    if is_open_clip_arch(arch):
        return build_open_clip(arch, pretrained, download_root)
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


def reference_tokenizer() -> SimpleTokenizer:
    """The :class:`clip.simple_tokenizer.SimpleTokenizer` that
    ``clip.tokenize`` uses (clip's module instance, built at its import),
    or a new one with clip's default BPE vocabulary if clip has none."""
    tokenizer = getattr(clip.clip, '_tokenizer', None)
    if isinstance(tokenizer, SimpleTokenizer):
        return tokenizer
    return SimpleTokenizer()


def is_plain_text(text: str) -> bool:
    """Whether clip's ``basic_clean`` leaves ``text`` as ``text.strip()``.

    True for printable ASCII (``' '`` to ``'~'``) without ``'&'``: such a
    text holds nothing that ``ftfy.fix_text`` changes (mojibake, HTML
    entities, control or non-ASCII characters, line breaks, terminal
    escapes) and no ``'&'`` for ``html.unescape``; its only whitespace is
    ``' '``. Other texts may be changed by the cleaning, depending on their
    context, and are cleaned by clip's own functions.
    """
    return text.isascii() and text.isprintable() and '&' not in text


def clean_text(text: str) -> str:
    """``whitespace_clean(basic_clean(text)).lower()``: the text that
    ``SimpleTokenizer.encode`` splits into words, with single ``' '``
    separators and none at the ends (clip's functions for texts that are
    not :func:`is_plain_text`)."""
    if is_plain_text(text):
        return ' '.join(text.split()).lower()
    return whitespace_clean(basic_clean(text)).lower()


def bpe_symbols(token: str, ranks: Dict[Tuple[str, str], int]) -> List[str]:
    """Byte-pair encode one byte-encoded word as ``SimpleTokenizer.bpe``.

    The last character carries ``'</w>'``; then the adjacent pair of lowest
    rank in ``ranks`` (the merges, each with a distinct rank) is merged at
    each of its non-overlapping occurrences, left to right, until no pair
    has a rank or one symbol is left.

    Returns:
        The symbols, which ``SimpleTokenizer.bpe`` returns joined by
        ``' '``.
    """
    symbols = list(token[:-1])
    symbols.append(token[-1] + '</w>')
    get = ranks.get
    while len(symbols) > 1:
        best, best_rank = None, None
        for pair in zip(symbols, symbols[1:]):
            rank = get(pair)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = pair, rank
        if best is None:
            break
        first, second = best
        merged, i, last = [], 0, len(symbols) - 1
        while i < last:
            if symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        if i == last:
            merged.append(symbols[last])
        symbols = merged
    return symbols


def encode_word(word: str, tokenizer: SimpleTokenizer,
                memo: Dict[str, List[int]]) -> List[int]:
    """BPE token ids of one space-free piece of cleaned text, as
    ``tokenizer.encode`` produces them for it.

    The piece is split with clip's regular expression (an ASCII word of
    letters is one match), each match is byte-encoded, then BPE-encoded:
    from ``memo`` (byte-encoded match -> ids, filled here), else from
    ``tokenizer.cache`` where it holds it (the special tokens
    ``<|startoftext|>`` / ``<|endoftext|>`` and words clip encoded before;
    read only), else by :func:`bpe_symbols`.
    """
    if word.isascii() and word.isalpha():
        matches = [word]
    else:
        matches = tokenizer.pat.findall(word)
    byte_encoder, encoder = tokenizer.byte_encoder, tokenizer.encoder
    ids = []
    for match in matches:
        token = ''.join(byte_encoder[b] for b in match.encode('utf-8'))
        token_ids = memo.get(token)
        if token_ids is None:
            cached = tokenizer.cache.get(token)
            if cached is not None:
                symbols = cached.split(' ')
            else:
                symbols = bpe_symbols(token, tokenizer.bpe_ranks)
            token_ids = memo[token] = [encoder[s] for s in symbols]
        ids += token_ids
    return ids


def encode_texts(texts: Sequence[str],
                 tokenizer: Optional[SimpleTokenizer] = None
                 ) -> List[List[int]]:
    """BPE token ids of each text, equal to ``tokenizer.encode(text)``
    (no start/end tokens), computed fast for lists of similar texts.

    ``SimpleTokenizer.encode`` cleans the whole text (:func:`clean_text`),
    then finds its words with a regular expression none of whose matches
    holds a ``' '`` and which looks neither behind nor ahead, and BPE-encodes
    each match on its own. So the ids of a text are the concatenation of the
    ids of its ``' '``-separated pieces of cleaned text; each distinct piece
    is encoded once (:func:`encode_word`). Prompt templates filled with
    words repeat most pieces. :func:`is_plain_text` texts skip ftfy and
    ``html.unescape``, which leave them unchanged.

    Args:
        texts: N strings.
        tokenizer: clip's tokenizer (default :func:`reference_tokenizer`).

    Returns:
        N lists of token ids.
    """
    if tokenizer is None:
        tokenizer = reference_tokenizer()
    pieces: Dict[str, List[int]] = {}  # piece of cleaned text -> ids
    matches: Dict[str, List[int]] = {}  # byte-encoded match -> ids
    out = []
    for text in texts:
        ids = []
        for word in clean_text(text).split(' '):
            if not word:  # the cleaned text is empty
                continue
            word_ids = pieces.get(word)
            if word_ids is None:
                word_ids = pieces[word] = encode_word(word, tokenizer, matches)
            ids += word_ids
        out.append(ids)
    return out


def tokenize(texts: Union[str, Sequence[str]],
             context_length: int) -> torch.Tensor:
    """Tokenise ``texts`` with clip's BPE tokenizer into ``(N, L)`` int64.

    The ids equal ``clip.tokenize(texts, context_length)``'s: per row
    ``<|startoftext|>``, the text's BPE ids, ``<|endoftext|>``, then zeros
    up to ``L = context_length`` (computed by :func:`encode_texts`).

    Raises:
        ValueError: naming the first text longer than ``context_length``
            tokens (start and end tokens included) instead of silently
            truncating it.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    tokenizer = reference_tokenizer()
    all_ids = encode_texts(texts, tokenizer)
    lengths = [len(ids) + 2 for ids in all_ids]
    for text, length in zip(texts, lengths):
        if length > context_length:
            raise ValueError(
                f'Prompt {text!r} is longer than the context length '
                f'{context_length} of the text encoder')
    sot = tokenizer.encoder['<|startoftext|>']
    eot = tokenizer.encoder['<|endoftext|>']
    flat = []
    for ids in all_ids:
        flat.append(sot)
        flat += ids
        flat.append(eot)
    tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
    filled = torch.arange(context_length) < torch.tensor(
        lengths, dtype=torch.long).view(-1, 1)
    tokens[filled] = torch.tensor(flat, dtype=torch.long)
    return tokens


class CLIPTokenizer:
    """openai-clip's tokenizer as ``texts -> (N, context_length)`` int64
    (:func:`tokenize`); ``name`` identifies it in token-cache keys."""
    name = 'clip'

    def __init__(self, context_length: int):
        self.context_length = int(context_length)

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        return tokenize(texts, self.context_length)


def build_tokenizer(arch: str, context_length: int):
    """The tokenizer of a :func:`build_clip` architecture: openai-clip's BPE
    (:class:`CLIPTokenizer`) or the open_clip model's own
    (:func:`~.open_clip_builder.open_clip_tokenizer`)."""
    if is_open_clip_arch(arch):
        return open_clip_tokenizer(arch, context_length)
    return CLIPTokenizer(context_length)


#: bumped whenever the token-cache content changes
TOKEN_CACHE_VERSION = 1


def cached_tokenize(prompts: Sequence[str],
                    context_length: int,
                    cache_dir: Union[None, str, Path] = None,
                    tokenizer=None) -> torch.Tensor:
    """:func:`tokenize`, with the result stored in ``cache_dir``.

    Tokenising ~70,000 prompts (NegLabel's candidates) takes about a
    second of CPU time (:func:`tokenize`; ~4 s with ``clip.tokenize``) and
    does not depend on the model, so the token ids are kept
    in ``cache_dir/tokens-<sha256 of the prompts and length>.pt`` (written
    atomically; an unreadable file is tokenised again). ``cache_dir=None``
    tokenises without a cache. ``tokenizer`` (default: openai-clip's,
    :class:`CLIPTokenizer`) is any ``texts -> (N, context_length)``
    callable with a ``name``, which is part of the cache key.

    Returns:
        int64 ``(N, context_length)`` token ids.
    """
    if tokenizer is None:
        tokenizer = CLIPTokenizer(context_length)
    if cache_dir is None:
        return tokenizer(prompts)
    # openai-clip's key is kept as it was (existing caches stay valid)
    hasher = hashlib.sha256(
        f'{TOKEN_CACHE_VERSION}:{context_length}'.encode() + (
            b'' if tokenizer.name == 'clip' else
            f':{tokenizer.name}'.encode()))
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
    tokens = tokenizer(prompts)
    try:
        atomic_torch_save(tokens.int(), str(path))
    except OSError as err:
        print_log(f'could not write token cache {path}: {err!r}',
                  logger='current', level=logging.WARNING)
    return tokens
