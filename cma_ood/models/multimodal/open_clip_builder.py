"""open_clip (``open_clip_torch``) as a second source of CLIP models.

Architecture names carry the prefix ``open_clip:``: ``open_clip:MODEL`` or
``open_clip:MODEL/TAG``, ``MODEL`` one of ``open_clip.list_models()`` (or of
our tiny test models :data:`TINY_OPEN_CLIP_CONFIGS`) and ``TAG`` one of its
pretrained tags (``open_clip.list_pretrained_tags_by_model(MODEL)``), e.g.
``open_clip:ViT-L-14/laion2b_s32b_b82k``. Weights (:func:`build_open_clip`):

* ``pretrained=None`` and no tag: random initialisation (open_clip's own);
* ``pretrained=None`` with a tag: open_clip downloads the tag's weights
  (Hugging Face hub or URL, into ``download_root``) where there is internet;
  without it the error names the file to fetch and how to point the config
  at it;
* ``pretrained='<path>'``: a local file (``.safetensors``, ``.bin``,
  ``.pt``/``.pth`` state dict, with the usual ``state_dict`` wrapper and
  ``module.`` prefixes), loaded strictly.

The tokenizer is the model's own (:func:`open_clip_tokenizer`): most
open_clip models use OpenAI's BPE with context length 77 (ids identical to
``clip.tokenize``), others (SigLIP, MetaCLIP-2, ...) a Hugging Face
tokenizer. open_clip's towers run their own forwards: the fast text and
image towers of :mod:`.clip_text` / :mod:`.clip_vision` apply to
openai-clip models only (docs/backbones.md lists which paths are
optimised).

open_clip is an optional dependency: ``pip install cma_ood[open_clip]``.
"""
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...utils.checkpoint import state_dict_mismatch

#: prefix of open_clip architecture names
OPEN_CLIP_PREFIX = 'open_clip:'

#: tiny open_clip models for tests and CPU runs (``open_clip.CLIP`` keyword
#: arguments): the shapes of our ``tiny-*`` openai-clip models
TINY_OPEN_CLIP_CONFIGS: Dict[str, dict] = {
    'tiny-vit-32px': dict(
        embed_dim=64,
        vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8,
                        head_width=32),
        text_cfg=dict(context_length=24, vocab_size=49408, width=64,
                      heads=2, layers=2)),
}


def is_open_clip_arch(arch: str) -> bool:
    """Whether ``arch`` names an open_clip model (``open_clip:...``)."""
    return isinstance(arch, str) and arch.startswith(OPEN_CLIP_PREFIX)


def parse_open_clip_arch(arch: str) -> Tuple[str, Optional[str]]:
    """``'open_clip:MODEL/TAG'`` -> ``('MODEL', 'TAG')`` (tag ``None`` when
    absent). open_clip model names contain no ``/``."""
    if not is_open_clip_arch(arch):
        raise ValueError(f'{arch!r} is not an open_clip architecture name '
                         f"('{OPEN_CLIP_PREFIX}MODEL' or "
                         f"'{OPEN_CLIP_PREFIX}MODEL/TAG')")
    name = arch[len(OPEN_CLIP_PREFIX):]
    model, _, tag = name.partition('/')
    if not model or '/' in tag or (_ and not tag):
        raise ValueError(
            f'Malformed open_clip architecture {arch!r}: expected '
            f"'{OPEN_CLIP_PREFIX}MODEL' or '{OPEN_CLIP_PREFIX}MODEL/TAG', "
            "e.g. 'open_clip:ViT-L-14/laion2b_s32b_b82k'")
    return model, tag or None


def import_open_clip():
    """``import open_clip``, or an ImportError naming the extra."""
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            'open_clip architectures (model.arch="open_clip:...") need the '
            'open_clip_torch package: pip install "cma_ood[open_clip]" (or '
            'pip install open_clip_torch)') from err
    return open_clip


def _check_model_name(open_clip, model: str) -> None:
    if model in TINY_OPEN_CLIP_CONFIGS:
        return
    if model not in open_clip.list_models():
        raise KeyError(
            f'Unknown open_clip model {model!r}. Choose one of '
            f'open_clip.list_models() (e.g. ViT-B-16, ViT-L-14, ViT-H-14, '
            f'ViT-bigG-14, convnext_base_w) or of our tiny models '
            f'{sorted(TINY_OPEN_CLIP_CONFIGS)}')


def _check_tag(open_clip, model: str, tag: str) -> None:
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag not in tags:
        raise KeyError(f'open_clip publishes no weights {tag!r} for '
                       f'{model!r}; available tags: {tags}')


def weights_source(model: str, tag: str) -> str:
    """Where open_clip downloads the weights of ``model`` / ``tag`` from:
    a Hugging Face file URL or a plain URL."""
    open_clip = import_open_clip()
    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = cfg.get('hf_hub', '')
    if hub:
        repo = hub.rstrip('/')
        return (f'https://huggingface.co/{repo}/resolve/main/'
                'open_clip_pytorch_model.bin (or open_clip_model.'
                'safetensors)')
    return cfg.get('url', '') or '(no download address published)'


def load_open_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a local open_clip weights file: ``.safetensors``
    or a ``torch.save`` file (read by our openai-clip loader, which strips
    wrappers and prefixes and loads ``weights_only``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'open_clip weights file {path!r} does not '
                                'exist')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        from .clip_builder import clean_clip_state_dict
        return clean_clip_state_dict(load_file(path, device='cpu'))
    from .clip_builder import load_clip_state_dict
    return load_clip_state_dict(path)  # also strips wrappers / prefixes


def build_open_clip(arch: str,
                    pretrained: Optional[str] = None,
                    download_root: Optional[str] = None) -> nn.Module:
    """An fp32 open_clip ``CLIP`` (or ``CustomTextCLIP``) for
    ``arch = 'open_clip:MODEL[/TAG]'``; weights as the module doc says."""
    open_clip = import_open_clip()
    model_name, tag = parse_open_clip_arch(arch)
    _check_model_name(open_clip, model_name)
    if model_name in TINY_OPEN_CLIP_CONFIGS:
        if tag is not None:
            raise KeyError(f'{model_name!r} is a tiny test model without '
                           f'published weights; drop the tag {tag!r}')
        model = open_clip.CLIP(**TINY_OPEN_CLIP_CONFIGS[model_name])
    elif tag is not None and pretrained is None:
        _check_tag(open_clip, model_name, tag)
        try:
            model = open_clip.create_model(
                model_name, pretrained=tag, cache_dir=download_root,
                require_pretrained=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise OSError(
                f'Cannot get open_clip weights {model_name}/{tag} '
                f'({type(err).__name__}: {err}). Without internet, download '
                f'{weights_source(model_name, tag)} on another machine and '
                f'pass model.pretrained=/path/to/that/file (model.arch may '
                f'keep the tag, which then only names the weights)') from err
        return model.float()
    else:
        # OpenAI's (and some other) weights need QuickGELU, which open_clip
        # switches on by the tag
        quick_gelu = tag is not None and bool(
            open_clip.get_pretrained_cfg(model_name, tag).get(
                'quick_gelu', tag == 'openai'))
        model = open_clip.create_model(
            model_name, pretrained=None, force_quick_gelu=quick_gelu)
    if pretrained is not None:
        state_dict = load_open_clip_state_dict(pretrained)
        problem = state_dict_mismatch(model.state_dict(), state_dict)
        if problem:
            raise RuntimeError(
                f'{pretrained} does not match open_clip {model_name}; '
                f'{problem}. (A file of OpenAI weights loads into '
                'open_clip:MODEL/openai.)')
        model.load_state_dict(state_dict, strict=True)
    return model.float()


class OpenCLIPTokenizer:
    """The tokenizer of an open_clip model as ``texts -> (N, L)`` int64.

    Unlike open_clip's tokenizers, which cut long texts silently, a text
    whose ids reach the last position (possibly cut) is an error naming
    it, as for openai-clip (:func:`~.clip_builder.tokenize`).

    Attributes:
        name: identifies the tokenizer in token-cache keys.
        context_length: ``L``.
    """

    def __init__(self, tokenizer: Callable, name: str, context_length: int):
        self._tokenizer = tokenizer
        self.name = name
        self.context_length = int(context_length)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts: List[str] = [texts] if isinstance(texts, str) else list(texts)
        tokens = self._tokenizer(texts, context_length=self.context_length)
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        pad = getattr(self._tokenizer, 'pad_token_id', 0) or 0
        full = (tokens[:, -1] != pad).nonzero().view(-1)
        if len(full):
            raise ValueError(
                f'Prompt {texts[int(full[0])]!r} is at least as long as the '
                f'context length {self.context_length} of the text encoder')
        return tokens


def open_clip_tokenizer(arch: str, context_length: int) -> OpenCLIPTokenizer:
    """The tokenizer of ``arch`` (``open_clip.get_tokenizer`` of its model;
    OpenAI's BPE for our tiny models)."""
    open_clip = import_open_clip()
    model_name, _ = parse_open_clip_arch(arch)
    if model_name in TINY_OPEN_CLIP_CONFIGS:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    else:
        tokenizer = open_clip.get_tokenizer(model_name,
                                            context_length=context_length)
    kind = type(tokenizer).__name__
    detail = getattr(tokenizer, 'tokenizer', None)
    name = f'open_clip:{model_name}:{kind}'
    if detail is not None:
        name += f':{getattr(detail, "name_or_path", type(detail).__name__)}'
    return OpenCLIPTokenizer(tokenizer, name, context_length)


# --------------------------------------------------------- image towers
def open_clip_tower_kind(visual: nn.Module) -> Optional[str]:
    """``'vit'``, ``'timm'`` or ``'resnet'`` for open_clip's image towers,
    ``None`` for anything else (open_clip is not imported for the check:
    without it loaded no tower can be one of its)."""
    open_clip = sys.modules.get('open_clip')
    if open_clip is None:
        return None
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    for cls, kind in ((VisionTransformer, 'vit'), (TimmModel, 'timm'),
                      (ModifiedResNet, 'resnet')):
        if isinstance(visual, cls):
            return kind
    return None


def _check_vit_pooling(visual: nn.Module) -> None:
    if getattr(visual, 'attn_pool', None) is not None:
        raise ValueError(
            'Pre-projection features of open_clip towers with attentional '
            'pooling (CoCa) are not supported; use feature="embedding"')


def open_clip_projection(visual: nn.Module) -> Optional[torch.Tensor]:
    """The final projection ``(width, D)`` of an open_clip tower, ``None``
    where the pre-projection feature is the embedding (ResNet towers, whose
    attention pool ends in its own projection, as openai-clip's)."""
    kind = open_clip_tower_kind(visual)
    if kind == 'vit':
        _check_vit_pooling(visual)
        return visual.proj
    if kind == 'timm':
        proj = getattr(visual.head, 'proj', None)
        if len(visual.head) == 0 or (len(visual.head) == 1 and isinstance(
                visual.head[0], nn.Identity)):
            return None
        if isinstance(proj, nn.Linear) and proj.bias is None and all(
                isinstance(m, (nn.Linear, nn.Dropout)) for m in visual.head):
            return proj.weight.t()
        raise ValueError(
            'This open_clip timm tower ends in a head that is not a linear '
            f'projection ({visual.head}); its pre-projection features '
            'cannot be projected to the embedding: use feature="embedding"')
    return None


def open_clip_pre_projection_module(visual: nn.Module) -> nn.Module:
    """The module whose output holds the pre-projection feature: a ViT's
    ``ln_post`` (pooled by :func:`open_clip_pre_projection_output`), a timm
    tower's ``trunk``, the whole tower otherwise."""
    kind = open_clip_tower_kind(visual)
    if kind == 'vit':
        _check_vit_pooling(visual)
        return visual.ln_post
    if kind == 'timm':
        return visual.trunk
    return visual


def open_clip_pre_projection_output(visual: nn.Module,
                                    output: torch.Tensor) -> torch.Tensor:
    """The pre-projection feature ``(B, width)`` from the output of
    :func:`open_clip_pre_projection_module`: open_clip's ViT applies
    ``ln_post`` to all tokens before pooling (unless
    ``final_ln_after_pool``), so the class token (or the token mean) is
    taken here as its forward does."""
    if open_clip_tower_kind(visual) == 'vit' and output.dim() == 3:
        return visual._global_pool(output)[0]
    return output
