"""The contract between the classifier and its OoD scorers.

A scorer maps a batch of L2-normalised image embeddings and their cosine
similarities to the ID class prompts to one score per image, higher = more
in-distribution (:meth:`BaseOoDScorer.forward`). What it may know about
the model is a :class:`ScorerContext`, built by the classifier and passed
to :meth:`BaseOoDScorer.prepare` whenever the weights changed; scorers
never reach into the classifier itself.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn


@dataclass
class ScorerContext:
    """What a scorer's :meth:`~BaseOoDScorer.prepare` gets to know about
    the model it scores for (built by ``MultiModalClassifier.
    scorer_context()`` for its current weights).

    Attributes:
        device: where the model (and the scorer's state) lives.
        classnames: the ID class names, ``None`` if not set yet.
        test_template: the ID prompt template (``'the nice {}'``).
        context_length: the text tower's context length (token ids).
        embed_dim: size D of the joint embedding space.
        image_tower: the image tower (``clip.visual``): feature scorers read
            their feature sizes, projection and pre-projection features
            from it.
        class_embeddings: ``() -> (C, D)`` unit-norm fp32 embeddings of the
            ID prompts (computed once per weights).
        encode_text: ``(prompts, batch_size=None, progress=False,
            token_cache_dir=None, normalize=True) -> (N, D)`` unit-norm
            (``normalize=False``: raw) fp32 embeddings of full prompts;
            token ids are cached in ``token_cache_dir``.
        text_fingerprint: ``() -> str``, sha256 of the text tower's weights
            (a cache key of everything mined from text).
        image_fingerprint: ``() -> str``, sha256 of the image tower's
            weights (checks that cached features match the model).
    """
    device: torch.device
    classnames: Optional[List[str]]
    test_template: str
    context_length: int
    embed_dim: int
    image_tower: nn.Module
    class_embeddings: Callable[[], torch.Tensor]
    encode_text: Callable[..., torch.Tensor]
    text_fingerprint: Callable[[], str]
    image_fingerprint: Callable[[], str]
    _memo: dict = field(default_factory=dict, repr=False)

    def memoized(self, key: str, fn: Callable[[], object]):
        """``fn()`` computed once per context (fingerprints, embeddings
        several scorers need)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    @property
    def num_classes(self) -> int:
        return 0 if self.classnames is None else len(self.classnames)


@dataclass
class ScorerOutput:
    """What a scorer may return instead of a plain ``(B,)`` score tensor.

    Attributes:
        score: ``(B,)`` the score (higher = more in-distribution), stored as
            ``DataSample.ood_scores[name]``.
        variants: ``suffix -> (B,)`` further scores of the same scorer,
            stored as ``ood_scores[name + suffix]``; seeded scorers use
            ``'@seed=<s>'`` for the repeats of their seeded part
            (:class:`~cma_ood.evaluation.OoDMetric` reports their spread).
        per_image: ``key -> (B, ...)`` tensor or length-``B`` list of
            per-image details (e.g. ``'top_negatives'``: the negative
            labels an image matched best), stored as
            ``DataSample.ood_details[name][key]`` (tensor rows on the CPU).
    """
    score: torch.Tensor
    variants: Dict[str, torch.Tensor] = field(default_factory=dict)
    per_image: Dict[str, Union[torch.Tensor, Sequence]] = field(
        default_factory=dict)


class BaseOoDScorer(nn.Module):
    """Base class of OoD scorers.

    Args:
        name (str, optional): key in the results table; defaults to the
            class's ``default_name``.
        at_validation (bool): also score during validation in training
            (the classifier skips scorers with ``False`` in its
            ``val_step``); cheap scores default to True.
    """
    default_name = 'score'

    def __init__(self, name: Optional[str] = None,
                 at_validation: bool = True):
        super().__init__()
        self.name = name or self.default_name
        if not isinstance(at_validation, bool):
            raise TypeError(
                f'at_validation must be a bool, got {at_validation!r}')
        self.at_validation = at_validation

    def prepare(self, context: ScorerContext) -> None:
        """Build what scoring needs from the model's current weights.

        Called before the val/test loop (:class:`~cma_ood.engine.hooks.
        PrepareScorersHook`), or by the classifier before its first scored
        batch after a weight change. Scorers without such state (the logit
        scores) do nothing."""

    def forward(self, image_embeds: torch.Tensor, cos_sim: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` from ``image_embeds`` ``(B, D)`` (normalised),
        ``cos_sim`` ``(B, C)`` to the ID prompts and the model's
        exponentiated ``logit_scale``; or a :class:`ScorerOutput` with
        score variants and per-image details."""
        raise NotImplementedError


def check_unique_names(scorers: Sequence[nn.Module]) -> None:
    """Scorer names key the results: a repeated name is an error."""
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f'OoD scorer names must be unique, got {names}')


def run_scorers(scorers: Sequence[nn.Module], image_embeds: torch.Tensor,
                cos_sim: torch.Tensor, logit_scale: torch.Tensor
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, dict]]:
    """Call every scorer on one batch.

    Returns:
        ``(scores, details)``: ``{key: (B,) float}`` with each scorer's
        score under its name and its :class:`ScorerOutput` variants under
        ``name + suffix``, in scorer order; ``{name: {key: (B, ...) tensor
        on the CPU or length-B list}}`` of the scorers with per-image
        details.
    """
    scores: Dict[str, torch.Tensor] = {}
    details: Dict[str, dict] = {}
    for scorer in scorers:
        out = scorer(image_embeds, cos_sim, logit_scale)
        if not isinstance(out, ScorerOutput):
            out = ScorerOutput(out)
        scores[scorer.name] = out.score.float()
        for suffix, variant in out.variants.items():
            scores[scorer.name + suffix] = variant.float()
        if out.per_image:
            details[scorer.name] = {
                key: value.cpu() if torch.is_tensor(value) else value
                for key, value in out.per_image.items()
            }
    return scores, details


def sample_details(details: Dict[str, dict], i: int) -> Dict[str, dict]:
    """The per-image details of :func:`run_scorers` of image ``i``, as
    ``DataSample.ood_details``: ``{name: {key: value[i]}}``."""
    return {name: {key: value[i] for key, value in per_image.items()}
            for name, per_image in details.items()}
