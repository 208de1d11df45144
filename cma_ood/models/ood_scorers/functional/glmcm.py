"""GL-MCM, global-local maximum concept matching (pure torch functions).

GL-MCM (Miyai et al., 2023; ``AtsuMiyai/GL-MCM``
``utils/detection_util.py``) adds to MCM's global score the largest
softmax probability of any image *patch*: the patch features are the last
ViT block's value path (:func:`~cma_ood.models.multimodal.clip_vision.
vit_local_features`), compared with the ID prompt embeddings by cosine.

Conventions: higher score = more in-distribution; half-precision inputs
are computed in float32; softmax-type scores are evaluated in log space.
"""
import torch
from torch import Tensor

from .logit import mcm_score


def _check_local(local_sim: Tensor) -> Tensor:
    if not isinstance(local_sim, Tensor) or local_sim.dim() != 3:
        raise ValueError(
            'local_sim must be a (B, P, C) tensor (images, patches, ID '
            f'classes), got {getattr(local_sim, "shape", type(local_sim))}')
    if local_sim.shape[1] == 0 or local_sim.shape[2] == 0:
        raise ValueError('local_sim needs at least one patch and one class, '
                         f'got shape {tuple(local_sim.shape)}')
    if not local_sim.is_floating_point():
        raise ValueError(f'local_sim must be floating, got {local_sim.dtype}')
    if local_sim.dtype in (torch.float16, torch.bfloat16):
        local_sim = local_sim.float()
    return local_sim


def local_mcm_score(local_sim: Tensor, temperature: float = 1.0) -> Tensor:
    """L-MCM: the largest per-patch softmax probability.

    ``max_{p, c} softmax_c(local_sim[:, p, :] / T)`` (GL-MCM's
    ``np.max(smax_local, axis=(1, 2, 3))`` over the grid and the classes).

    Args:
        local_sim: ``(B, P, C)`` cosine similarities of each image's P patch
            features to the C ID prompt embeddings.
        temperature: T > 0 (GL-MCM: 1, on the raw cosine).

    Returns:
        ``(B,)`` scores in ``[1/C, 1]``.
    """
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    logits = _check_local(local_sim) / temperature
    per_patch = logits.amax(dim=2) - torch.logsumexp(logits, dim=2)  # (B, P)
    return per_patch.amax(dim=1).exp()


def glmcm_score(cos_sim: Tensor,
                local_sim: Tensor,
                temperature: float = 1.0,
                lambda_local: float = 1.0) -> Tensor:
    """GL-MCM = MCM(global) + ``lambda_local`` * L-MCM(local).

    Args:
        cos_sim: ``(B, C)`` cosine similarities of the global image
            embeddings to the ID prompts.
        local_sim: ``(B, P, C)`` the same for the patch features.
        temperature: T > 0 of both softmaxes (GL-MCM: 1).
        lambda_local: weight of the local term (GL-MCM's ``--lambda_local``:
            1.0 by default, 0.5 in its ImageNet script).

    Returns:
        ``(B,)`` scores in ``[(1 + lambda) / C, 1 + lambda]``.
    """
    local_sim = _check_local(local_sim)
    if cos_sim.dim() != 2 or cos_sim.shape[0] != local_sim.shape[0] \
            or cos_sim.shape[1] != local_sim.shape[2]:
        raise ValueError(
            f'cos_sim {tuple(cos_sim.shape)} and local_sim '
            f'{tuple(local_sim.shape)} must be (B, C) and (B, P, C)')
    return mcm_score(cos_sim, temperature) + \
        lambda_local * local_mcm_score(local_sim, temperature)
