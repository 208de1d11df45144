"""Scores of the zero-shot classifier's similarities and logits: MCM,
MSP, max-logit and energy (registered modules wiring
:mod:`~cma_ood.models.ood_scorers.functional.logit` to configs)."""
from typing import Optional

from mmpretrain.registry import MODELS

from .base import BaseOoDScorer
from .functional.logit import (energy_score, max_logit_score, mcm_score,
                               msp_score)


class _TemperatureScorer(BaseOoDScorer):
    """A scorer with a softmax / energy temperature ``T > 0``."""

    def __init__(self,
                 temperature: float = 1.0,
                 name: Optional[str] = None,
                 at_validation: bool = True):
        super().__init__(name, at_validation)
        if not temperature > 0:
            raise ValueError(f'{type(self).__name__}: temperature must be '
                             f'> 0, got {temperature!r}')
        self.temperature = temperature


@MODELS.register_module()
class MCMScorer(_TemperatureScorer):
    """Maximum concept matching (MCM, NeurIPS 2022): max softmax of
    ``cos_sim / temperature`` over the ID classes.

    The published default is ``temperature=1`` on the raw cosine (MCM's
    ``eval_ood_detection.py --T 1``; also CMA's MCM column). At 0.01 it is
    the zero-shot MSP of CLIP's logits (:class:`MSPScorer` with the
    pretrained logit scale of 100).
    """
    default_name = 'MCM'

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
class EnergyScorer(_TemperatureScorer):
    """Negative energy ``T * logsumexp(logits / T)`` of the logits."""
    default_name = 'Energy'

    def forward(self, image_embeds, cos_sim, logit_scale):
        return energy_score(logit_scale * cos_sim, self.temperature)
