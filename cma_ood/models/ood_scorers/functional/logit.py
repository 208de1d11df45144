"""Post-hoc OoD scores on similarity / logit matrices (pure torch functions).

Every function takes a 2-D tensor of shape (B, C) -- one row per image, one
column per ID class -- and returns a 1-D tensor of shape (B,) on the same
device. Sign convention: higher score = more in-distribution.

Half-precision inputs (float16 / bfloat16) are computed and returned in
float32; float32 / float64 inputs keep their dtype. All softmax-type scores
are evaluated in log space (``exp(max - logsumexp)``) so they neither
overflow nor underflow for large logits such as ``cos_sim / 0.01``.
"""
import torch
from torch import Tensor

from ...utils.checks import check_matrix


def _check_2d(x: Tensor, name: str) -> Tensor:
    """Validate a (B, C) floating tensor with C >= 1; upcast half to fp32."""
    check_matrix(x, name, '(B, C)')
    if x.shape[1] == 0:
        raise ValueError(f'{name} must have at least one class (C >= 1)')
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')


def max_softmax(logits: Tensor) -> Tensor:
    """Max over classes of ``softmax(logits, dim=1)``, computed stably.

    Args:
        logits: (B, C) floating tensor.

    Returns:
        (B,) tensor in (0, 1], ``exp(max_c logits - logsumexp_c logits)``.
    """
    logits = _check_2d(logits, 'logits')
    return torch.exp(logits.amax(dim=1) - torch.logsumexp(logits, dim=1))


def mcm_score(cos_sim: Tensor, temperature: float = 1.0) -> Tensor:
    """MCM: maximum softmax of cosine similarities over temperature.

    Args:
        cos_sim: (B, C) cosine similarities between image embeddings and the
            C ID class text embeddings (values in [-1, 1]).
        temperature: softmax temperature tau > 0 (MCM's published setting:
            1, on the raw cosine; 0.01 gives CLIP's zero-shot MSP).

    Returns:
        (B,) ``max_c softmax(cos_sim / tau)_c`` in [1/C, 1]; higher = ID.
    """
    _check_temperature(temperature)
    cos_sim = _check_2d(cos_sim, 'cos_sim')
    return max_softmax(cos_sim / temperature)


def msp_score(logits: Tensor) -> Tensor:
    """Maximum softmax probability (MSP).

    Args:
        logits: (B, C) classifier logits.

    Returns:
        (B,) ``max_c softmax(logits)_c`` in [1/C, 1]; higher = ID.
    """
    return max_softmax(logits)


def max_logit_score(logits: Tensor) -> Tensor:
    """Maximum logit.

    Args:
        logits: (B, C) classifier logits.

    Returns:
        (B,) ``max_c logits_c``; higher = ID.
    """
    logits = _check_2d(logits, 'logits')
    return logits.amax(dim=1)


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy ``T * logsumexp(logits / T)``.

    Args:
        logits: (B, C) classifier logits.
        temperature: energy temperature T > 0.

    Returns:
        (B,) negative energy; higher = ID (the energy itself is the negation).
    """
    _check_temperature(temperature)
    logits = _check_2d(logits, 'logits')
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def l1_norm_score(logits: Tensor) -> Tensor:
    """PLP's ``l1_norm`` (``non_neg=True``): ``sum_c (l_c - min_c l_c)``.

    Args:
        logits: (B, C) probe logits.

    Returns:
        (B,) float32 scores; higher = ID.
    """
    logits = _check_2d(logits, 'logits').float()
    return (logits - logits.amin(dim=1, keepdim=True)).sum(dim=1)
