"""CLIP zero-shot classifiers from prompt ensembles, and PLP's
pseudo-labels and ImageNet class names (pure torch, no state, no I/O).

The targets of pseudo-label probing (PLP, TMLR 2024; published code
HHU-MMBS/plp-official-tmlr2024): the argmax of CLIP's zero-shot classifier
built from a prompt ensemble (``eval/utils.py: clip_label_embeddings``,
``linear_probing.py: clip_pseudo_probs``), over the first synonym of each
ImageNet class (``loaders/datasets.py: get_class_names``).
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_matrix, check_positive_int

#: PLP's prompt ensemble (exact strings, trailing period included)
PLP_TEMPLATES = (
    'a photo of a {}.',
    'a blurry photo of a {}.',
    'a photo of many {}.',
    'a photo of the large {}.',
    'a photo of the small {}.',
)


# ----------------------------------------------------------- class names
def first_synonyms(categories: Sequence[str]) -> List[str]:
    """The first synonym of each comma-separated entry.

    PLP's ``get_class_names`` takes ``label.split(',')[0]`` of every line of
    its ImageNet label list (no stripping: the first synonym never carries
    surrounding spaces there or in mmpretrain's lists).
    """
    return [str(c).split(',')[0] for c in categories]


def imagenet_first_synonyms() -> List[str]:
    """PLP's 1000 ImageNet class names: the first synonym of every entry of
    mmpretrain's ``IMAGENET_CATEGORIES`` (``'tench, Tinca tinca'`` ->
    ``'tench'``), identical to ``split(',')[0]`` of the published
    ``loaders/imagenet1000_clsidx_to_labels.txt``. 363 of them differ from
    ``IMAGENET_SIMPLE_CATEGORIES`` (297 ignoring letter case)."""
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    return first_synonyms(IMAGENET_CATEGORIES)


# ------------------------------------------------------------------ PLP
def zero_shot_ensemble_weights(encode_fn: Callable[[Sequence[str]], Tensor],
                               classnames: Sequence[str],
                               templates: Sequence[str] = PLP_TEMPLATES
                               ) -> Tensor:
    """CLIP's zero-shot classifier from a prompt ensemble.

    For every template ``t``, the prompts ``t.format(c)`` of all classes are
    encoded and L2-normalised; the per-class mean over the templates is
    L2-normalised again (CLIP's prompt-ensembling recipe).

    Args:
        encode_fn: maps a list of ``C`` prompts to their text embeddings
            ``(C, D)`` (normalised or not: each is normalised here).
        classnames: the ``C`` ID class names.
        templates: prompt templates with one ``{}`` each; defaults to
            :data:`PLP_TEMPLATES`.

    Returns:
        float32 ``(C, D)`` unit-norm class weights, on ``encode_fn``'s
        device.
    """
    classnames = list(classnames)
    templates = list(templates)
    if not classnames:
        raise ValueError('zero_shot_ensemble_weights: classnames is empty')
    if not templates:
        raise ValueError('zero_shot_ensemble_weights: templates is empty')
    total = None
    for template in templates:
        if template.count('{}') != 1:
            raise ValueError(f'template {template!r} must contain exactly '
                             'one "{}" placeholder')
        embeds = encode_fn([template.format(c) for c in classnames])
        check_matrix(embeds, f'embeddings of template {template!r}')
        if embeds.shape[0] != len(classnames):
            raise ValueError(
                f'encode_fn returned {embeds.shape[0]} embeddings for '
                f'{len(classnames)} prompts of template {template!r}')
        embeds = F.normalize(embeds.float(), dim=-1)
        total = embeds if total is None else total + embeds
    return F.normalize(total / len(templates), dim=-1)


def pseudo_labels(feats: Tensor,
                  class_weights: Tensor,
                  chunk_size: int = 65536,
                  projection: Optional[Tensor] = None) -> Tensor:
    """PLP targets: ``argmax_c (feats @ projection) @ class_weights.T``.

    The zero-shot prediction of every row. ``projection`` maps
    pre-projection image features into the joint embedding space (a ViT
    tower's ``proj``); ``None`` means ``feats`` are embeddings already. The
    argmax does not depend on the length of a row, so the features need not
    be normalised (PLP normalises the pre-projection features, projects
    them and takes the argmax of the cosine logits; the result is the
    same).

    Args:
        feats: ``(N, D)`` image features (any float dtype; float32
            products).
        class_weights: ``(C, E)`` zero-shot classifier, e.g. from
            :func:`zero_shot_ensemble_weights`.
        chunk_size: rows of ``feats`` per matrix product.
        projection: ``(D, E)`` or ``None`` (then ``E == D``).

    Returns:
        int64 ``(N,)`` class indices, on ``feats``' device.
    """
    check_matrix(feats, 'feats')
    check_positive_int(chunk_size, 'chunk_size')
    if projection is not None:
        check_matrix(projection, 'projection', '(D, E)', dim=None)
        if projection.shape[0] != feats.shape[1]:
            raise ValueError(
                f'projection maps {projection.shape[0]}-d features, feats '
                f'are {feats.shape[1]}-d')
        proj = projection.to(feats.device, torch.float32)
        emb_dim = proj.shape[1]
    else:
        proj, emb_dim = None, feats.shape[1]
    check_matrix(class_weights, 'class_weights', '(C, E)', dim=emb_dim)
    weights = class_weights.to(feats.device, torch.float32)
    out = torch.empty(feats.shape[0], dtype=torch.long, device=feats.device)
    for start in range(0, feats.shape[0], chunk_size):
        chunk = feats[start:start + chunk_size].float()
        if proj is not None:
            chunk = chunk @ proj
        out[start:start + chunk.shape[0]] = (chunk @ weights.T).argmax(dim=1)
    return out
