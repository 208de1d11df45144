"""Registered OoD scorers: thin modules wiring score functions to configs.

A scorer maps a batch of L2-normalised image embeddings and their cosine
similarities to the ID class prompts to one score per image, higher = more
in-distribution. The classifier calls :meth:`BaseOoDScorer.prepare` once
before scoring (NegLabel encodes its negative labels there) and stores each
scorer's output under ``scorer.name`` in ``DataSample.ood_scores``.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from .ood_scores import energy_score, max_logit_score, mcm_score, msp_score


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

    def prepare(self, classifier: nn.Module) -> None:
        """Called by the classifier before the first scored batch."""

    def forward(self, image_embeds: torch.Tensor, cos_sim: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` from ``image_embeds`` ``(B, D)`` (normalised),
        ``cos_sim`` ``(B, C)`` to the ID prompts and the model's
        exponentiated ``logit_scale``."""
        raise NotImplementedError


@MODELS.register_module()
class MCMScorer(BaseOoDScorer):
    """Maximum concept matching (MCM, NeurIPS 2022): max softmax of
    ``cos_sim / temperature`` over the ID classes.

    The published default is ``temperature=1`` on the raw cosine (MCM's
    ``eval_ood_detection.py --T 1``; also CMA's MCM column). At 0.01 it is
    the zero-shot MSP of CLIP's logits (:class:`MSPScorer` with the
    pretrained logit scale of 100).
    """
    default_name = 'MCM'

    def __init__(self,
                 temperature: float = 1.0,
                 name: Optional[str] = None,
                 at_validation: bool = True):
        super().__init__(name, at_validation)
        self.temperature = temperature

    def forward(self, image_embeds, cos_sim, logit_scale):
        return mcm_score(cos_sim, self.temperature)


@MODELS.register_module()
class MSPScorer(BaseOoDScorer):
    """Maximum softmax probability of the classifier logits."""
    default_name = 'MSP'

    def forward(self, image_embeds, cos_sim, logit_scale):
        return msp_score(logit_scale * cos_sim)


@MODELS.register_module()
class MaxLogitScorer(BaseOoDScorer):
    """Maximum classifier logit."""
    default_name = 'MaxLogit'

    def forward(self, image_embeds, cos_sim, logit_scale):
        return max_logit_score(logit_scale * cos_sim)


@MODELS.register_module()
class EnergyScorer(BaseOoDScorer):
    """Negative energy ``T * logsumexp(logits / T)`` of the logits."""
    default_name = 'Energy'

    def __init__(self,
                 temperature: float = 1.0,
                 name: Optional[str] = None,
                 at_validation: bool = True):
        super().__init__(name, at_validation)
        self.temperature = temperature

    def forward(self, image_embeds, cos_sim, logit_scale):
        return energy_score(logit_scale * cos_sim, self.temperature)
