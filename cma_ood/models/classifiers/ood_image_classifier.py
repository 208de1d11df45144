"""A fine-tuned image classifier as an OoD detector: the classifier
baselines of the PLP study (MSP, max-logit and energy of its logits)."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..ood_scorers.logit import EnergyScorer, MaxLogitScorer, MSPScorer

#: the scorers that need only logits (the others need a CLIP model)
LOGIT_SCORERS = (MSPScorer, MaxLogitScorer, EnergyScorer)


@MODELS.register_module()
class OoDImageClassifier(ImageClassifier):
    """mmpretrain's ``ImageClassifier`` (same arguments, same checkpoint
    keys: any mmpretrain classification checkpoint loads) whose ``predict``
    also scores every image with ``ood_scorers`` computed from its logits,
    for ``OoDMetric`` (``DataSample.ood_scores``, higher = more ID).

    The logit scorers get the logits as they are (``MSPScorer``: maximum
    softmax probability, ``MaxLogitScorer``, ``EnergyScorer``: ``T *
    logsumexp(logits / T)``); scorers that need prompts or CLIP features
    (MCM, NegLabel, Mahalanobis, kNN, probes) are refused.

    Args:
        ood_scorers (list[dict]): logit scorers. Defaults to MSP, max-logit
            and energy (T = 1).
        **kwargs: ``ImageClassifier``'s (backbone, neck, head,
            data_preprocessor, init_cfg, ...).
    """

    def __init__(self,
                 ood_scorers: Sequence[dict] = (dict(type='MSPScorer'),
                                                dict(type='MaxLogitScorer'),
                                                dict(type='EnergyScorer')),
                 **kwargs):
        super().__init__(**kwargs)
        scorers = [MODELS.build(cfg) for cfg in ood_scorers]
        for scorer in scorers:
            if not isinstance(scorer, LOGIT_SCORERS):
                raise ValueError(
                    f'OoDImageClassifier scores from logits only; '
                    f'{type(scorer).__name__} needs a CLIP model '
                    '(MultiModalClassifier). Use MSPScorer, MaxLogitScorer '
                    'or EnergyScorer')
        names = [s.name for s in scorers]
        if len(set(names)) != len(names):
            raise ValueError(f'OoD scorer names must be unique, got {names}')
        self.ood_scorers = nn.ModuleList(scorers)

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """The head's prediction (``pred_score``, ``pred_label``) plus
        ``ood_scores``: ``{name: float}`` per image."""
        feats = self.extract_feat(inputs)
        logits = self.head(feats).float()
        one = logits.new_ones(())
        # the logit scorers read logit_scale * cos_sim: the logits, scale 1
        scores = torch.stack(
            [s(None, logits, one).float() for s in self.ood_scorers],
            dim=1).cpu()
        data_samples = self.head.predict(feats, data_samples)
        names = [s.name for s in self.ood_scorers]
        for ds, row in zip(data_samples, scores.tolist()):
            ds.ood_scores = dict(zip(names, row))
        return data_samples
