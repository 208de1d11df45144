"""The CMA (cross-modal alignment) loss, CVPR 2025.

For ``B`` matched image/text pairs with L2-normalised embeddings ``I`` and
``T`` and the exponentiated logit scale ``s``::

    logits_per_image = s * I @ T.T                      (B x B)
    ce_img  = CE(logits_per_image, arange(B))
    ce_txt  = CE(logits_per_image.T, arange(B))
    cma_img = mean_i(-logsumexp_j logits_per_image[i, j])
    cma_txt = mean_i(-logsumexp_j logits_per_image[j, i])
    loss    = (ce_img + lam * cma_img) / 2 + (ce_txt + lam * cma_txt) / 2

Duplicates of a class inside a batch count as negatives (paper convention).
``lam = 0`` is FLYP's symmetric CLIP loss.

Distributed training follows the local-loss formulation: each rank forms
only its own rows of the two logit matrices against the embeddings gathered
(with gradients) from all ranks, so memory grows linearly with the global
batch. Each rank's loss is scaled so that the mean over ranks equals the
single-process loss on the concatenated batch, also with uneven batches.
"""
import math
from typing import Dict, NamedTuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_dist_info
from mmpretrain.registry import MODELS

from cma_ood.utils.dist import (all_gather_sizes, gather_with_grad,
                                host_process_group)


class CMATerms(NamedTuple):
    """Per-row terms of the CMA loss, each of shape ``(B_local,)``."""
    ce_img: torch.Tensor
    ce_txt: torch.Tensor
    cma_img: torch.Tensor
    cma_txt: torch.Tensor


def cma_loss_terms(image_embeds: torch.Tensor,
                   text_embeds: torch.Tensor,
                   all_image_embeds: torch.Tensor,
                   all_text_embeds: torch.Tensor,
                   logit_scale: torch.Tensor,
                   offset: int = 0) -> CMATerms:
    """Per-row CMA terms of local rows against a (gathered) global batch.

    Args:
        image_embeds: ``(B_local, D)`` L2-normalised image embeddings.
        text_embeds: ``(B_local, D)`` L2-normalised text embeddings; row
            ``i`` is the prompt of image ``i``.
        all_image_embeds: ``(N, D)`` embeddings of the whole global batch
            (``image_embeds`` occupies rows ``offset:offset + B_local``).
        all_text_embeds: ``(N, D)``, likewise.
        logit_scale: scalar, already exponentiated.
        offset: index of the first local row in the global batch.

    Returns:
        :class:`CMATerms` with the cross-entropy of image->text and
        text->image rows and the alignment terms ``-logsumexp`` of the same
        rows, each ``(B_local,)``.
    """
    logits_per_image = logit_scale * image_embeds @ all_text_embeds.T
    logits_per_text = logit_scale * text_embeds @ all_image_embeds.T
    targets = torch.arange(
        offset, offset + image_embeds.shape[0], device=image_embeds.device)
    return CMATerms(
        ce_img=F.cross_entropy(logits_per_image, targets, reduction='none'),
        ce_txt=F.cross_entropy(logits_per_text, targets, reduction='none'),
        cma_img=-torch.logsumexp(logits_per_image, dim=1),
        cma_txt=-torch.logsumexp(logits_per_text, dim=1),
    )


def cma_loss(image_embeds: torch.Tensor,
             text_embeds: torch.Tensor,
             logit_scale: torch.Tensor,
             lam: float = 0.001) -> torch.Tensor:
    """Single-process CMA loss of ``B`` pairs of raw embeddings ``(B, D)``.

    The embeddings are L2-normalised here; ``logit_scale`` is already
    exponentiated. Returns a scalar tensor.
    """
    img = F.normalize(image_embeds, dim=-1)
    txt = F.normalize(text_embeds, dim=-1)
    t = cma_loss_terms(img, txt, img, txt, logit_scale)
    return ((t.ce_img + lam * t.cma_img).mean() +
            (t.ce_txt + lam * t.cma_txt).mean()) / 2


@MODELS.register_module()
class CMALoss(nn.Module):
    """CMA loss (``lam > 0``) or FLYP's CLIP loss (``lam = 0``).

    ``CMALoss(lam)(image_embeds, text_embeds, logit_scale)`` takes raw
    (unnormalised) embeddings of ``B`` matched pairs, ``(B, D)`` each, and
    the already-exponentiated logit scale, and returns a scalar; with
    ``output_dict=True`` (open_clip's ``ClipLoss`` convention) a dict of
    ``loss`` plus the detached parts ``contrastive`` (the symmetric CE) and
    ``alignment`` (the mean ``-logsumexp`` terms), which the classifier
    logs.

    Under ``torch.distributed`` with world size ``W > 1`` the embeddings are
    all-gathered with gradients (``gather_with_grad=True``, the default):
    the mean of the ranks' losses equals the single-process loss on the
    concatenated batch, and each rank's embedding gradient divided by ``W``
    equals the single-process gradient of its rows, which DDP's gradient
    averaging turns into the exact global gradient. Both towers' embeddings
    travel in one collective, and the ranks' batch sizes (which may differ)
    through a CPU group (:func:`~cma_ood.utils.dist.host_process_group`),
    so that the step never waits for the GPU. With
    ``gather_with_grad=False`` each rank computes the loss of its own batch
    only (a different, smaller-batch objective).

    Args:
        lam (float): weight of the alignment term. Defaults to 0.001.
        gather_with_grad (bool): gather across ranks. Defaults to True.
    """

    def __init__(self, lam: float = 0.001, gather_with_grad: bool = True):
        super().__init__()
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f'CMALoss: lam must be finite and >= 0, got {lam}')
        self.lam = float(lam)
        self.gather_with_grad = gather_with_grad
        # gloo group for the batch sizes under NCCL, made at the first
        # distributed call (see host_process_group)
        self._host_group = None

    def __getstate__(self):
        # a process group belongs to this process: copies make their own
        return dict(self.__dict__, _host_group=None)

    def forward(self,
                image_embeds: torch.Tensor,
                text_embeds: torch.Tensor,
                logit_scale: torch.Tensor,
                output_dict: bool = False
                ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
            raise ValueError(
                'CMALoss expects image_embeds and text_embeds of the same '
                f'shape (B, D), got {tuple(image_embeds.shape)} and '
                f'{tuple(text_embeds.shape)}')
        img = F.normalize(image_embeds, dim=-1)
        txt = F.normalize(text_embeds, dim=-1)
        rank, world_size = get_dist_info()
        if self.gather_with_grad and world_size > 1:
            # the batch sizes go through a CPU group: no wait for the GPU
            if self._host_group is None:
                self._host_group = host_process_group()
            sizes = all_gather_sizes(img.shape[0], self._host_group)
            # one collective for both towers' embeddings
            all_img, all_txt = gather_with_grad(torch.cat([img, txt], dim=1),
                                                sizes).split(
                                                    img.shape[1], dim=1)
            # gathered rows are ordered by rank
            offset = sum(sizes[:rank])
            scale = world_size / sum(sizes)
        else:
            all_img, all_txt, offset = img, txt, 0
            scale = 1.0 / img.shape[0]
        t = cma_loss_terms(img, txt, all_img, all_txt, logit_scale, offset)
        ce = (t.ce_img + t.ce_txt) / 2
        align = (t.cma_img + t.cma_txt) / 2
        loss = scale * (ce + self.lam * align).sum()
        if not output_dict:
            return loss
        return dict(
            loss=loss,
            contrastive=(scale * ce.sum()).detach(),
            alignment=(scale * align.sum()).detach())

    def extra_repr(self) -> str:
        return f'lam={self.lam}, gather_with_grad={self.gather_with_grad}'
