"""CLIP as an MMEngine model: CMA fine-tuning, zero-shot prediction, OoD."""
import contextlib
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.utils import ProgressBar
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..ood_scorers.base import (ScorerContext, check_unique_names,
                                run_scorers, sample_details)
from ..utils.fingerprint import image_tower_sha256, text_tower_sha256
from ..utils.prompts import check_template, resolve_classnames
from .clip_builder import build_clip, build_tokenizer, cached_tokenize
from .clip_parts import clip_embed_dim, text_tower_parameters
from .open_clip_builder import is_open_clip_arch
from .clip_text import (encode_text_truncated, pad_prompt_ids, round_length,
                        text_length)
from .clip_vision import encode_image_vit, is_clip_vit

# CLIP's normalisation on the 0-255 scale of mmpretrain's preprocessors
CLIP_MEAN = (122.770938, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)


@MODELS.register_module()
class MultiModalClassifier(BaseModel):
    """A CLIP model fine-tuned contrastively and used as a zero-shot
    classifier and OoD detector.

    Modes (MMEngine's ``forward(inputs, data_samples, mode)``):

    * ``loss``: encodes the images and the training prompts of their
      classes and returns the configured loss's ``loss`` plus its logged
      parts (CMA: ``contrastive`` and ``alignment``) and ``logit_scale``.
    * ``predict``: zero-shot classification over the test prompts
      (``pred_score`` = softmax of ``logit_scale * cos``, ``pred_label``)
      and one score per configured OoD scorer in
      ``DataSample.ood_scores[name]`` (a Python float, higher = more
      in-distribution; a scorer returning a
      :class:`~cma_ood.models.ood_scorers.ScorerOutput` adds its variants
      as ``ood_scores[name + suffix]`` and its per-image details as
      ``ood_details[name]``), and ``pred_cos``, the cosine of the top-1
      class.
    * ``tensor``: the zero-shot logits ``logit_scale * cos``, ``(B, C)``.

    Args:
        arch (str): CLIP architecture: an openai-clip name, see
            :func:`cma_ood.models.clip_builder.list_clip_archs`, or an
            open_clip model ``'open_clip:MODEL[/TAG]'`` (e.g.
            ``'open_clip:ViT-L-14/laion2b_s32b_b82k'``, see
            :mod:`cma_ood.models.multimodal.open_clip_builder`), which
            brings its own tokenizer.
        pretrained (str, optional): ``None``, ``'openai'`` or a weights
            file, see :func:`cma_ood.models.clip_builder.build_clip`.
        download_root (str, optional): cache dir for downloads.
        classnames: the ID class names (a list, or ``'imagenet'`` for
            mmpretrain's ``IMAGENET_SIMPLE_CATEGORIES``), or ``None`` to take
            them from the dataset's metainfo (``ClassNamesHook``).
        train_template (str): prompt used by ``loss``.
        test_template (str): prompt used by ``predict``/``tensor``.
        loss (dict): loss config, ``CMALoss`` by default; called as
            ``loss(image_embeds, text_embeds, logit_scale, output_dict=True)``
            and returning a dict with ``loss`` (plus logged parts).
        ood_scorers (list[dict]): scorers evaluated by ``predict``.
        freeze_image (bool): keep the image tower fixed.
        freeze_text (bool): keep the text tower (and logit scale) fixed.
        max_logit_scale (float): clamp of the exponentiated logit scale.
        text_batch_size (int): prompts encoded per forward when building
            the class embeddings.
        train_prompt_multiple (int): the distinct classes of a training
            batch have their prompts encoded in a batch padded to a multiple
            of this (with copies of one prompt, whose embeddings are
            dropped; at most as many as there are classes): a few shapes
            instead of a new one almost every iteration, so that the
            compiled text forward and cuDNN's attention plans are reused
            (docs/benchmarks.md). The loss and gradients are those of the
            unpadded batch. 1 switches it off. Defaults to 8.
        truncate_text (bool): run the text tower only up to the batch's
            last EOT token, with causal SDPA attention (identical results,
            see :mod:`cma_ood.models.clip_text`); openai-clip models only,
            open_clip models run their own forward. Defaults to True.
        fast_image_tower (bool): run a ViT image tower batch-first through
            SDPA and compute only the class token in the last block
            (identical results, see :mod:`cma_ood.models.clip_vision`);
            ResNet and open_clip towers always run their own forward.
            Defaults to True.
        compile (bool | dict | str): ``torch.compile`` the image and text
            forwards (checkpoint keys unchanged); a dict is passed to
            ``torch.compile`` as keyword arguments. ``'auto'`` compiles the
            training forwards when a GPU is available and runs testing and
            mining eagerly: at test time the compilation (and its
            recompilations for the last batch and the prompt lengths) cost
            more than they save (docs/benchmarks.md). ``True`` or a dict
            compile the training forwards and the test-time image forward,
            which then runs at one batch size (the largest seen; smaller
            batches are padded, so the last batch does not recompile);
            text is encoded eagerly at test time. Defaults to False.
        test_autocast (bool | str): encode test images under CUDA autocast
            (bf16 where supported, else fp16) in :meth:`predict`, as the
            published code runs CLIP's fp16 weights; prompt embeddings stay
            fp32. ``'auto'``: when the inputs are on a GPU; ``True``: also
            on the CPU (bf16); ``False``: fp32. Defaults to ``'auto'``
            (docs/fidelity.md).
        data_preprocessor (dict, optional): defaults to
            :class:`~cma_ood.models.CLIPDataPreprocessor` (mmpretrain's
            ``ClsDataPreprocessor`` that keeps the labels on the host) with
            CLIP's mean/std, BGR -> RGB; a dict without ``type`` changes
            those defaults (e.g. ``dict(decode_ahead=False)``).
    """

    def __init__(self,
                 arch: str = 'ViT-B/16',
                 pretrained: Optional[str] = None,
                 download_root: Optional[str] = None,
                 classnames: Union[None, str, Sequence[str]] = 'imagenet',
                 train_template: str = 'a photo of a {}',
                 test_template: str = 'the nice {}',
                 loss: dict = dict(type='CMALoss', lam=0.001),
                 ood_scorers: Sequence[dict] = (dict(type='MCMScorer'), ),
                 freeze_image: bool = False,
                 freeze_text: bool = False,
                 max_logit_scale: float = 100.0,
                 text_batch_size: int = 1024,
                 train_prompt_multiple: int = 8,
                 truncate_text: bool = True,
                 fast_image_tower: bool = True,
                 compile: Union[bool, dict, str] = False,
                 test_autocast: Union[bool, str] = 'auto',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None or 'type' not in data_preprocessor:
            data_preprocessor = dict(
                dict(type='CLIPDataPreprocessor', mean=CLIP_MEAN,
                     std=CLIP_STD, to_rgb=True), **(data_preprocessor or {}))
        super().__init__(
            data_preprocessor=MODELS.build(data_preprocessor),
            init_cfg=init_cfg)
        self.arch = arch
        self.clip = build_clip(arch, pretrained, download_root)
        self.context_length = int(self.clip.context_length)
        self.tokenizer = build_tokenizer(arch, self.context_length)
        self.train_template = check_template(train_template, 'train_template')
        self.test_template = check_template(test_template, 'test_template')
        self.loss_module = MODELS.build(loss)
        self.ood_scorers = nn.ModuleList(
            [MODELS.build(cfg) for cfg in ood_scorers])
        check_unique_names(self.ood_scorers)
        self.max_logit_scale = max_logit_scale
        self.text_batch_size = text_batch_size
        if isinstance(train_prompt_multiple, bool) or not isinstance(
                train_prompt_multiple, int) or train_prompt_multiple < 1:
            raise ValueError('train_prompt_multiple must be a positive int, '
                             f'got {train_prompt_multiple!r}')
        self.train_prompt_multiple = train_prompt_multiple
        # our fast text tower applies to openai-clip's layout only
        self.truncate_text = truncate_text and not is_open_clip_arch(arch)
        self.fast_image_tower = fast_image_tower and is_clip_vit(
            self.clip.visual)
        if test_autocast not in (True, False, 'auto'):
            raise ValueError("test_autocast must be True, False or 'auto', "
                             f'got {test_autocast!r}')
        self.test_autocast = test_autocast
        # eager and (if compiled) compiled forwards; see _forwards
        self._eager = (self._image_tower_forward, self._text_tower_forward)
        self._compiled = None
        self._compile_eval = compile is not False and compile != 'auto'
        self._eval_batch = 0  # batch size of the compiled test forward
        if compile == 'auto':
            compile = torch.cuda.is_available()
        if compile:
            kwargs = compile if isinstance(compile, dict) else {}
            self._compiled = tuple(
                torch.compile(f, **kwargs) for f in self._eager)
        self.freeze_image = freeze_image
        self.freeze_text = freeze_text
        self._freeze()
        self.classnames: Optional[List[str]] = None
        self._class_embeds: Optional[torch.Tensor] = None
        # names of the scorers prepared for the current weights
        self._prepared: set = set()
        self._validating = False
        self.register_load_state_dict_post_hook(
            lambda module, keys: module.invalidate_cache())
        self.set_classnames(resolve_classnames(classnames))

    # ----------------------------------------------------------- set-up
    def _freeze(self) -> None:
        if self.freeze_image:
            self.clip.visual.requires_grad_(False)
        if self.freeze_text:
            for _, param in text_tower_parameters(self.clip):
                param.requires_grad_(False)
            self.clip.logit_scale.requires_grad_(False)

    def set_classnames(self, classnames: Optional[Sequence[str]]) -> None:
        """Set the ID class names and tokenise their prompts once."""
        self.classnames = None if classnames is None else list(classnames)
        self.invalidate_cache()
        if self.classnames is None:
            return
        device = self.clip.logit_scale.device
        for attr, template in (('train_tokens', self.train_template),
                               ('test_tokens', self.test_template)):
            tokens = self.tokenize(
                [template.format(c) for c in self.classnames])
            if attr == 'train_tokens':
                # positions each training prompt needs (last EOT + 1), kept
                # on the CPU so that cutting a batch's tokens never waits
                # for the GPU
                self._train_lengths = tokens.argmax(dim=-1) + 1
            # buffers move with the model but are not saved in checkpoints
            self.register_buffer(attr, tokens.to(device), persistent=False)

    @property
    def num_classes(self) -> int:
        return 0 if self.classnames is None else len(self.classnames)

    def invalidate_cache(self) -> None:
        """Forget the class embeddings and scorer state built from weights."""
        self._class_embeds = None
        self._prepared = set()

    def train(self, mode: bool = True) -> 'MultiModalClassifier':
        if mode:
            self.invalidate_cache()
        super().train(mode)
        if self.freeze_image:
            self.clip.visual.eval()
        return self

    def _require_classnames(self) -> None:
        if self.classnames is None:
            raise RuntimeError(
                'MultiModalClassifier has no class names: set '
                'model.classnames in the config or add ClassNamesHook to '
                'take them from the dataset metainfo')

    # ---------------------------------------------------------- encoding
    def logit_scale(self) -> torch.Tensor:
        """The exponentiated, clamped logit scale (scalar)."""
        return self.clip.logit_scale.exp().clamp(max=self.max_logit_scale)

    def _image_tower_forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.fast_image_tower:
            return encode_image_vit(self.clip.visual, images)
        return self.clip.encode_image(images)

    def _forwards(self):
        """(image, text) forwards: compiled in training; at test time the
        image forward is compiled only when compiling was asked for
        explicitly (see :meth:`_image_forward`) and the text forward runs
        eagerly (each prompt set is encoded once, at lengths that vary)."""
        if self._compiled is None:
            return self._eager
        if self.training:
            return self._compiled
        if self._compile_eval:
            return self._compiled[0], self._eager[1]
        return self._eager

    def _image_forward(self, images: torch.Tensor) -> torch.Tensor:
        forward = self._forwards()[0]
        if self.training or forward is self._eager[0]:
            return forward(images)
        # compiled at test time: one batch size, so that the last, smaller
        # batch of a set does not recompile (for dynamic shapes); padded
        # with zero images whose embeddings are dropped
        n = images.shape[0]
        self._eval_batch = max(self._eval_batch, n)
        if n == self._eval_batch:
            return forward(images)
        pad = images.new_zeros((self._eval_batch - n, *images.shape[1:]))
        return forward(torch.cat([images, pad]))[:n]

    def _text_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._forwards()[1](tokens)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings ``(B, D)`` of preprocessed images."""
        return self._image_forward(images)

    def _text_tower_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.truncate_text:
            return encode_text_truncated(self.clip, tokens)
        return self.clip.encode_text(tokens)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(N, context_length)`` of ``texts`` with this model's
        tokenizer (openai-clip's BPE, or the open_clip model's own)."""
        return self.tokenizer(texts)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw text embeddings ``(N, D)`` of tokens ``(N, L)``."""
        if self.truncate_text:
            tokens = tokens[:, :text_length(tokens)]
        return self._text_forward(tokens)

    @torch.no_grad()
    def encode_prompts(self,
                       tokens: torch.Tensor,
                       batch_size: Optional[int] = None,
                       progress: bool = False,
                       normalize: bool = True) -> torch.Tensor:
        """L2-normalised fp32 embeddings ``(N, D)`` of many prompts.

        Prompts are encoded in batches of ``batch_size`` (default
        ``text_batch_size``) after sorting them by length, so that each
        batch is cut to nearly its own length; ``progress`` shows a bar.
        ``normalize=False`` returns the raw fp32 embeddings (for prompt
        ensembles that average them before normalising, as CSP's)."""
        batch_size = batch_size or self.text_batch_size
        order = tokens.argmax(dim=-1).argsort()
        starts = range(0, tokens.shape[0], batch_size)
        bar = ProgressBar(len(starts)) if progress else None
        chunks = []
        for start in starts:
            chunks.append(
                self.encode_text(tokens[order[start:start + batch_size]]))
            if bar is not None:
                bar.update()
        embeds = torch.cat(chunks).float()
        if normalize:
            embeds = F.normalize(embeds, dim=-1)
        return embeds[order.argsort()]

    def embed_prompts(self,
                      prompts: Sequence[str],
                      batch_size: Optional[int] = None,
                      progress: bool = False,
                      token_cache_dir=None,
                      normalize: bool = True) -> torch.Tensor:
        """L2-normalised (``normalize=False``: raw) fp32 embeddings
        ``(N, D)`` of full prompts (:meth:`encode_prompts` of their token
        ids, which are cached in ``token_cache_dir`` if given, see
        :func:`cached_tokenize`)."""
        tokens = cached_tokenize(prompts, self.context_length,
                                 token_cache_dir, tokenizer=self.tokenizer)
        return self.encode_prompts(
            tokens.to(self.clip.logit_scale.device), batch_size=batch_size,
            progress=progress, normalize=normalize)

    def scorer_context(self) -> ScorerContext:
        """What the OoD scorers may know about this model (its current
        weights): see :class:`~cma_ood.models.ood_scorers.ScorerContext`.
        The fingerprints are computed on first use."""
        context = ScorerContext(
            device=self.clip.logit_scale.device,
            classnames=None if self.classnames is None else list(
                self.classnames),
            test_template=self.test_template,
            context_length=int(self.context_length),
            embed_dim=clip_embed_dim(self.clip),
            image_tower=self.clip.visual,
            class_embeddings=self.class_embeddings,
            encode_text=self.embed_prompts,
            text_fingerprint=lambda: context.memoized(
                'text', lambda: text_tower_sha256(self.clip)),
            image_fingerprint=lambda: context.memoized(
                'image', lambda: image_tower_sha256(self.clip)))
        return context

    def prepare_scorers(self, validating: bool = False) -> None:
        """Prepare the scorers that are not ready for the current weights:
        all of them, or with ``validating`` those that score during
        validation (``at_validation``). :class:`~cma_ood.engine.hooks.
        PrepareScorersHook` calls this before the val/test loop, so that
        mining, file reads and collectives happen there rather than in the
        first ``test_step``; :meth:`predict` calls it too (lazy fallback)."""
        pending = [
            s for s in self.ood_scorers
            if s.name not in self._prepared and (not validating
                                                 or s.at_validation)
        ]
        if not pending:
            return
        context = self.scorer_context()
        for scorer in pending:
            scorer.prepare(context)
            self._prepared.add(scorer.name)

    def class_embeddings(self) -> torch.Tensor:
        """Normalised test-prompt embeddings ``(C, D)``, cached until the
        weights change (train mode or ``load_state_dict``)."""
        self._require_classnames()
        if self._class_embeds is None or self.training:
            embeds = self.encode_prompts(self.test_tokens)
            if self.training:
                return embeds
            self._class_embeds = embeds
        return self._class_embeds

    # ------------------------------------------------------------- modes
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._zero_shot_logits(inputs)[0]
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        self._require_classnames()
        # labels stay on the CPU (CLIPDataPreprocessor leaves them there)
        # for the bookkeeping below: no device synchronisation in the step
        labels = torch.cat([ds.gt_label for ds in data_samples]).cpu()
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= self.num_classes):
            raise ValueError(
                f'gt_label out of range [0, {self.num_classes}): got '
                f'{labels.min().item()}..{labels.max().item()}; do the class '
                'names match the dataset?')
        image_embeds = self.encode_image(inputs)
        # each distinct class prompt is encoded once per batch
        classes, inverse = labels.unique(return_inverse=True)
        # padded to a few sizes (rows past len(classes) are never indexed)
        classes = pad_prompt_ids(classes, self.train_prompt_multiple,
                                 self.num_classes)
        text_embeds = self._encode_train_prompts(classes)[inverse.to(
            inputs.device, non_blocking=True)]
        scale = self.logit_scale()
        # one entry point, open_clip's convention: the loss and its logged
        # parts as a dict (a loss returning a tensor gives just 'loss')
        losses = self.loss_module(image_embeds.float(), text_embeds.float(),
                                  scale, output_dict=True)
        if isinstance(losses, torch.Tensor):
            losses = dict(loss=losses)
        losses['logit_scale'] = scale.detach()
        return losses

    def _encode_train_prompts(self, classes: torch.Tensor) -> torch.Tensor:
        """Raw embeddings of the training prompts of ``classes`` (CPU)."""
        tokens = self.train_tokens[classes.to(self.train_tokens.device,
                                              non_blocking=True)]
        if not self.truncate_text:
            return self._text_forward(tokens)
        length = round_length(int(self._train_lengths[classes].max()),
                              tokens.shape[1])
        return self._text_forward(tokens[:, :length])

    def _test_autocast(self, inputs: torch.Tensor):
        """The autocast context of test-time image encoding."""
        on_cuda = inputs.device.type == 'cuda'
        enabled = not self.training and (self.test_autocast is True or (
            self.test_autocast == 'auto' and on_cuda))
        if not enabled:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if not on_cuda or \
            torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(inputs.device.type, dtype=dtype)

    def _zero_shot_logits(self, inputs: torch.Tensor):
        with self._test_autocast(inputs):
            image_embeds = self.encode_image(inputs)
        image_embeds = F.normalize(image_embeds.float(), dim=-1)
        cos_sim = image_embeds @ self.class_embeddings().T
        return self.logit_scale() * cos_sim, cos_sim, image_embeds

    def val_step(self, data) -> list:
        """MMEngine's validation step: ``predict`` with the scorers whose
        ``at_validation`` is True (NegLabel is off by default: it would mine
        again after every training epoch)."""
        self._validating = True
        try:
            return super().val_step(data)
        finally:
            self._validating = False

    def active_scorers(self) -> List[nn.Module]:
        """The scorers ``predict`` runs now: all of them, or during
        ``val_step`` those with ``at_validation``."""
        return [
            s for s in self.ood_scorers
            if not self._validating or s.at_validation
        ]

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        scorers = self.active_scorers()
        self.prepare_scorers(validating=self._validating)
        logits, cos_sim, image_embeds = self._zero_shot_logits(inputs)
        scale = self.logit_scale()
        scores, details = run_scorers(scorers, image_embeds, cos_sim, scale)
        probs = logits.float().softmax(dim=-1)
        # one device-to-host copy per batch and per-image views made by
        # unbind: the Python loop below is the only per-image work
        names = list(scores)
        top_cos, labels = cos_sim.float().max(dim=-1, keepdim=True)
        probs, labels, top_cos, score_mat = (t.cpu() for t in (
            probs, labels, top_cos,
            torch.stack([scores[n] for n in names], dim=1)
            if names else probs.new_zeros(len(probs), 0)))
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        for i, (ds, prob, label, cos, row) in enumerate(
                zip(data_samples, probs.unbind(0), labels.unbind(0),
                    top_cos.view(-1).tolist(), score_mat.tolist())):
            ds.set_pred_score(prob).set_pred_label(label)
            ds.pred_cos = cos
            ds.ood_scores = dict(zip(names, row))
            if details:
                ds.ood_details = sample_details(details, i)
        return data_samples
