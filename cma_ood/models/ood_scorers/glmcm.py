"""GL-MCM (global-local MCM) as a registered OoD scorer.

The global term is MCM on the embeddings the classifier passes; the local
term needs the patch features of the same image forward, which the
classifier does not compute. For a ViT tower :class:`GLMCMScorer` reads the
input tokens of the tower's last block through a shared
:class:`~cma_ood.models.multimodal.clip_vision.LastBlockTap` (forward
pre-hooks valid for the fast tower and for CLIP's own forward) and
computes the value-path features from them
(:func:`~cma_ood.models.multimodal.clip_vision.vit_local_features`); for a
ResNet tower it reads the attention pool's input feature map
(:class:`~cma_ood.models.multimodal.clip_resnet.AttnPoolTap`) and computes
GL-MCM's ResNet local features, ``c_proj(v_proj(x))`` per position
(:func:`~cma_ood.models.multimodal.clip_resnet.resnet_local_features`). No
second image forward either way.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from ..multimodal.clip_resnet import (AttnPoolTap, is_clip_resnet,
                                      resnet_local_features,
                                      resnet_pooled_embedding)
from ..multimodal.clip_vision import (is_clip_vit, last_block_tap,
                                      vit_class_token_embedding,
                                      vit_local_features)
from .base import BaseOoDScorer, ScorerContext, ScorerOutput
from .functional.glmcm import local_mcm_score
from .functional.logit import mcm_score

#: min cosine between the classifier's embeddings and the ones recomputed
#: from the captured tokens (a bf16 forward against an fp32 recompute
#: agrees to ~1e-4; tokens of other images give far less)
_MATCH_COS = 0.99


@MODELS.register_module()
class GLMCMScorer(BaseOoDScorer):
    """GL-MCM: ``MCM(global) + lambda_local * L-MCM(local)``.

    G is MCM at ``temperature`` on the cosines to the ID prompts; L the
    largest softmax probability (over the ID classes, at the same
    temperature) of any patch feature
    (:func:`~.functional.glmcm.glmcm_score`). openai-clip towers, as in
    GL-MCM's ``clip/model.py``: for a ViT the patch tokens through the last
    block's value path, for a ResNet ``c_proj(v_proj(x))`` of each position
    of the attention pool's input; :meth:`prepare` refuses other towers.

    Args:
        lambda_local (float): weight of L (GL-MCM's default 1.0; its
            ImageNet script uses 0.5).
        temperature (float): T of both softmaxes (GL-MCM: 1, raw cosine).
        return_parts (bool): also store G and L as the score variants
            ``name + '.global'`` and ``name + '.local'`` (MCM and L-MCM).
        chunk_size (int): images whose local features are computed at a
            time (bounds the ``(chunk, 197, 4 * width)`` MLP activations of a
            ViT).
        at_validation (bool): also score during validation in training.
        name (str, optional): ``'GL-MCM'`` by default.
    """
    default_name = 'GL-MCM'

    def __init__(self,
                 lambda_local: float = 1.0,
                 temperature: float = 1.0,
                 return_parts: bool = False,
                 chunk_size: int = 64,
                 at_validation: bool = True,
                 name: Optional[str] = None):
        super().__init__(name, at_validation)
        if not temperature > 0:
            raise ValueError(
                f'GLMCMScorer: temperature must be > 0, got {temperature!r}')
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) \
                or chunk_size < 1:
            raise ValueError('GLMCMScorer: chunk_size must be a positive '
                             f'int, got {chunk_size!r}')
        self.lambda_local = float(lambda_local)
        self.temperature = float(temperature)
        self.return_parts = bool(return_parts)
        self.chunk_size = chunk_size
        self._visual = None
        self._tap = None
        self._local = self._embed = None
        self._seen = None
        self._verified = False
        self.register_buffer('class_embeds', None, persistent=False)

    def prepare(self, context: ScorerContext) -> None:
        visual = context.image_tower
        if isinstance(self._tap, AttnPoolTap):
            self._tap.remove()  # prepared before: one hook at a time
        if is_clip_vit(visual):
            self._tap = last_block_tap(visual)
            self._local, self._embed = (vit_local_features,
                                        vit_class_token_embedding)
        elif is_clip_resnet(visual):
            self._tap = AttnPoolTap(visual)
            self._local = resnet_local_features
            self._embed = resnet_pooled_embedding
        else:
            raise ValueError(
                f'GLMCMScorer ({self.name}) needs an openai-clip ViT or '
                'ResNet image tower (its local features are the last '
                "transformer block's or the attention pool's value path), "
                f'got {type(visual).__name__}; use an openai-clip arch such '
                "as 'ViT-B/16' or 'RN50', or drop GLMCMScorer")
        self._visual = visual
        self._seen = self._tap.step
        self._verified = False
        self.class_embeds = context.class_embeddings().float()

    def _tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tap = self._tap
        value = tap.value
        if tap.step == self._seen or value is None \
                or value.shape[0] != image_embeds.shape[0]:
            raise RuntimeError(
                f'GLMCMScorer ({self.name}): the tokens of the image '
                "tower's last block (the attention pool's input of a "
                'ResNet) were not captured for this batch (its forward '
                'pre-hooks did not run). If the classifier compiles its '
                'image forward (compile=True), build it with '
                "compile=False or 'auto' for GL-MCM")
        self._seen = tap.step
        return value

    def forward(self, image_embeds, cos_sim, logit_scale):
        if self._tap is None or self.class_embeds is None:
            raise RuntimeError('GLMCMScorer.prepare(context) must run '
                               'before scoring')
        tokens = self._tokens(image_embeds)
        device = image_embeds.device
        text = self.class_embeds.to(device)
        local = []
        with torch.autocast(device.type, enabled=False):
            if not self._verified:
                emb = F.normalize(
                    self._embed(self._visual, tokens).float(), dim=-1)
                cos = (emb * image_embeds.float()).sum(-1)
                if bool((cos < _MATCH_COS).any()):
                    raise RuntimeError(
                        f'GLMCMScorer ({self.name}): the captured tokens of '
                        'the last block do not belong to the embeddings of '
                        f'this batch (cosine {float(cos.min()):.4f}); was '
                        'the image tower run on other images in between?')
                self._verified = True
            for start in range(0, tokens.shape[0], self.chunk_size):
                feats = self._local(
                    self._visual, tokens[start:start + self.chunk_size])
                local.append(
                    local_mcm_score(feats.float() @ text.T,
                                    self.temperature))
            local_score = torch.cat(local)
            global_score = mcm_score(cos_sim.float(), self.temperature)
        score = global_score + self.lambda_local * local_score
        if not self.return_parts:
            return score
        return ScorerOutput(score, variants={'.global': global_score,
                                             '.local': local_score})
