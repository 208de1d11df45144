"""OoD scorers: registered modules that wire the pure functions of
:mod:`.functional` to configs. One room per family: ``logit`` (MCM, MSP,
max-logit, energy), ``neglabel``, ``feature`` (Mahalanobis, kNN), ``probe``
(scores of a linear probe's logits), ``csp`` (CSP), ``adaneg`` (AdaNeg, a
stream score), ``glmcm`` (GL-MCM); the contract is in ``base``."""
from .adaneg import AdaNegScorer
from .base import BaseOoDScorer, ScorerContext, ScorerOutput
from .csp import CSPScorer
from .feature import KNNScorer, MahalanobisScorer
from .glmcm import GLMCMScorer
from .logit import EnergyScorer, MaxLogitScorer, MCMScorer, MSPScorer
from .neglabel import NegLabelScorer
from .probe import ProbeScorer

__all__ = [
    'BaseOoDScorer', 'ScorerContext', 'ScorerOutput', 'KNNScorer',
    'MahalanobisScorer', 'EnergyScorer', 'MaxLogitScorer', 'MCMScorer',
    'MSPScorer', 'NegLabelScorer', 'ProbeScorer', 'CSPScorer',
    'AdaNegScorer', 'GLMCMScorer'
]
