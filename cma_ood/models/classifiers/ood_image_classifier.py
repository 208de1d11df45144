"""A fine-tuned image classifier as an OoD detector: the classifier
baselines of the PLP study (MSP, max-logit and energy of its logits), for
mmpretrain's classifiers (:class:`OoDImageClassifier`) and timm's
(:class:`OoDTimmClassifier`)."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmpretrain.models import ImageClassifier, TimmClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..ood_scorers.base import check_unique_names
from ..ood_scorers.logit import EnergyScorer, MaxLogitScorer, MSPScorer

#: the scorers that need only logits (the others need a CLIP model)
LOGIT_SCORERS = (MSPScorer, MaxLogitScorer, EnergyScorer)


DEFAULT_LOGIT_SCORERS = (dict(type='MSPScorer'), dict(type='MaxLogitScorer'),
                         dict(type='EnergyScorer'))


def build_logit_scorers(ood_scorers: Sequence[dict],
                        owner: str) -> nn.ModuleList:
    """Build ``ood_scorers``, refusing those that need a CLIP model and
    duplicate names."""
    scorers = [MODELS.build(cfg) for cfg in ood_scorers]
    for scorer in scorers:
        if not isinstance(scorer, LOGIT_SCORERS):
            raise ValueError(
                f'{owner} scores from logits only; '
                f'{type(scorer).__name__} needs a CLIP model '
                '(MultiModalClassifier). Use MSPScorer, MaxLogitScorer '
                'or EnergyScorer')
    check_unique_names(scorers)
    return nn.ModuleList(scorers)


def add_logit_scores(scorers: Sequence[nn.Module], logits: torch.Tensor,
                     data_samples: List[DataSample]) -> List[DataSample]:
    """Set ``ood_scores`` (``{name: float}``, higher = more ID) of each data
    sample from the classifier's ``logits`` ``(B, C)``."""
    logits = logits.float()
    one = logits.new_ones(())
    # the logit scorers read logit_scale * cos_sim: the logits, scale 1
    scores = torch.stack([s(None, logits, one).float() for s in scorers],
                         dim=1).cpu()
    names = [s.name for s in scorers]
    for ds, row in zip(data_samples, scores.tolist()):
        ds.ood_scores = dict(zip(names, row))
    return data_samples


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
                 ood_scorers: Sequence[dict] = DEFAULT_LOGIT_SCORERS,
                 **kwargs):
        super().__init__(**kwargs)
        self.ood_scorers = build_logit_scorers(ood_scorers,
                                               type(self).__name__)

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """The head's prediction (``pred_score``, ``pred_label``) plus
        ``ood_scores``: ``{name: float}`` per image."""
        feats = self.extract_feat(inputs)
        logits = self.head(feats)
        data_samples = self.head.predict(feats, data_samples)
        return add_logit_scores(list(self.ood_scorers), logits,
                                data_samples)


@MODELS.register_module()
class OoDTimmClassifier(TimmClassifier):
    """mmpretrain's ``TimmClassifier`` (a timm model by name: same
    arguments, ``timm.create_model``'s, e.g. ``model_name``,
    ``pretrained``, ``checkpoint_path``) whose ``predict`` also scores every
    image with logit ``ood_scorers``, as :class:`OoDImageClassifier`: the
    fine-tuned-classifier baselines of the PLP study with timm's ImageNet
    classifiers. Needs timm (``pip install "cma_ood[timm]"``).

    Args:
        ood_scorers (list[dict]): logit scorers. Defaults to MSP, max-logit
            and energy (T = 1).
        *args, **kwargs: ``TimmClassifier``'s.
    """

    def __init__(self,
                 *args,
                 ood_scorers: Sequence[dict] = DEFAULT_LOGIT_SCORERS,
                 **kwargs):
        try:
            import timm  # noqa: F401
        except ImportError as err:
            raise ImportError(
                'OoDTimmClassifier needs timm: pip install "cma_ood[timm]" '
                '(or pip install timm)') from err
        super().__init__(*args, **kwargs)
        self.ood_scorers = build_logit_scorers(ood_scorers,
                                               type(self).__name__)

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """timm's prediction (``pred_score``, ``pred_label``) plus
        ``ood_scores``."""
        logits = self(inputs)
        data_samples = self._get_predictions(logits, data_samples)
        return add_logit_scores(list(self.ood_scorers), logits, data_samples)
