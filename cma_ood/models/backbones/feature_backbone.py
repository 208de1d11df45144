"""Any timm or mmpretrain image model as a frozen feature extractor."""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..classifiers.ood_image_classifier import LOGIT_SCORERS
from ..ood_scorers.base import (ScorerContext, check_unique_names,
                                run_scorers, sample_details)
from ..ood_scorers.feature import KNNScorer, MahalanobisScorer
from ..ood_scorers.probe import ProbeScorer
from ..probes.linear_probe import probe_logits
from ..utils.prompts import resolve_classnames
from .functional import (IMAGENET_MEAN, IMAGENET_STD,
                         adapt_mmpretrain_state_dict, adapt_timm_state_dict,
                         backbone_sha256, import_timm,
                         load_state_dict_strict, mmpretrain_features,
                         preprocessor_from_data_config, read_state_dict,
                         timm_data_config, timm_features)

#: the backbone's features and the kinds a feature file records for them
#: (the file's vocabulary is CLIP's: the features before the model's last
#: linear map, and its output)
FEATURE_KINDS = {'pre_logits': 'pre_projection', 'logits': 'embedding'}
_FEATURE_NAMES = {kind: name for name, kind in FEATURE_KINDS.items()}
SOURCES = ('timm', 'mmpretrain')
#: the scorers a backbone without a text tower can feed
FEATURE_SCORERS = (ProbeScorer, MahalanobisScorer, KNNScorer)


def backbone_feature(feature: str, who: str = 'FeatureBackbone') -> str:
    """``'pre_logits'`` or ``'logits'`` for a backbone feature name or a
    feature-file kind (``'pre_projection'`` / ``'embedding'``)."""
    if feature in FEATURE_KINDS:
        return feature
    if feature in _FEATURE_NAMES:
        return _FEATURE_NAMES[feature]
    raise ValueError(
        f"{who}: feature must be 'pre_logits' or 'logits' (feature-file "
        f"kinds 'pre_projection' / 'embedding'), got {feature!r}")


class FeatureOutput(nn.Identity):
    """The point where :class:`FeatureBackbone` hands its features to the
    OoD scorers: an identity whose forward hook (the scorers'
    :class:`~cma_ood.models.multimodal.clip_vision.FeatureTap`) captures
    the un-normalised ``(B, output_dim)`` features of each test batch. It
    is the ``image_tower`` of the backbone's
    :class:`~cma_ood.models.ood_scorers.ScorerContext`: a tower without a
    projection, whose pre-projection features are its output."""

    def __init__(self, output_dim: int):
        super().__init__()
        self.output_dim = int(output_dim)


def _no_text(*args, **kwargs):
    raise RuntimeError(
        'FeatureBackbone has no text tower: scorers that need prompts '
        '(MCM, NegLabel, ...) need a CLIP model (MultiModalClassifier)')


def _has_pretrained_init(cfg: Any) -> bool:
    """Whether a model config holds an ``init_cfg`` of type Pretrained."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'Pretrained':
            return True
        return any(_has_pretrained_init(v) for v in cfg.values())
    if isinstance(cfg, (list, tuple)):
        return any(_has_pretrained_init(v) for v in cfg)
    return False


@MODELS.register_module()
class FeatureBackbone(BaseModel):
    """A frozen timm or mmpretrain image model as a feature extractor:
    feature caching (``tools/extract_features.py``), linear probes,
    Mahalanobis and kNN, and their OoD scores in one ``OoDMetric`` table.

    The model is built without weights (no download) and its weights come
    from the local file ``pretrained``: timm's loading rules for timm
    models (the family's ``checkpoint_filter_fn``; a classifier dropped
    for ``num_classes=0``), then every key and shape must match (an error
    names the file and the mismatches). It stays in eval mode without
    gradients; ``loss`` is refused.

    Features (:mod:`~cma_ood.models.backbones.functional`): ``'pre_logits'``
    (the features before the classifier's last linear layer; PLP's choice)
    or ``'logits'`` (a classifier's output). Feature files record them as
    the kinds ``'pre_projection'`` and ``'embedding'``
    (:data:`FEATURE_KINDS`), the names the extraction tool's ``--feature``
    and ``feature_extraction.feature`` take. There are no zero-shot
    pseudo-labels (no text tower): probes train on the true labels.

    Feature interface (what ``cma_ood.engine.feature_extractor`` uses):
    ``data_preprocessor``, :meth:`encode_features`,
    :meth:`feature_projection`, :meth:`image_fingerprint` and ``arch``.

    Test time: ``predict`` gives ``ood_scorers`` the L2-normalised
    ``feature`` features (and, through the :class:`FeatureOutput` tap, the
    raw ones): :class:`~cma_ood.models.ProbeScorer`,
    :class:`~cma_ood.models.MahalanobisScorer` and
    :class:`~cma_ood.models.KNNScorer` on feature files extracted with
    this backbone (the same :meth:`image_fingerprint` and feature kind,
    checked in :meth:`prepare_scorers`), and, for a classifier, the logit
    scorers (``MSPScorer``, ``MaxLogitScorer``, ``EnergyScorer``: the
    classifier baselines). ID predictions (``pred_label``) come from
    ``predict_with``.

    Args:
        source (str): ``'timm'`` (needs ``pip install cma_ood[timm]``) or
            ``'mmpretrain'``.
        model_name (str, optional): timm: a ``timm.create_model`` name
            (e.g. ``'vit_base_patch16_224.augreg_in21k'``; its
            ``pretrained_cfg`` gives the default normalisation);
            mmpretrain: a ``mmpretrain.get_model`` name (e.g.
            ``'resnet50_8xb32_in1k'``).
        model (dict, optional): mmpretrain only, instead of
            ``model_name``: a model config (``ImageClassifier``, or
            ``TimmClassifier``, whose timm model is then used as with
            ``source='timm'``). ``init_cfg`` inside it is not applied:
            weights come from ``pretrained``.
        pretrained (str, optional): local weights file: timm: a
            ``.safetensors`` / ``.pth`` / ``.bin`` state dict (e.g. the
            Hugging Face hub's ``model.safetensors``); mmpretrain: a
            ``.pth`` checkpoint (``state_dict``). ``None``: random weights
            (tests). Pickled files load with ``weights_only=True`` unless
            the tools' ``--trust-checkpoint`` is given.
        model_kwargs (dict, optional): keyword arguments of
            ``timm.create_model`` (e.g. ``num_classes=0``, ``img_size``)
            or of ``get_model`` (merged into its model config).
        feature (str): what ``predict`` scores: ``'pre_logits'`` (default)
            or ``'logits'``.
        input_size (int | tuple, optional): image size ``(H, W)`` of one
            forward that measures the feature sizes of an mmpretrain model
            (default 224).
        classnames: the ID class names (a list or an alias), optional:
            scorers then check their class count.
        ood_scorers (list[dict]): scorers run by ``predict``.
        predict_with (str, optional): the ID prediction of ``predict``:
            ``'auto'`` (the first ``ProbeScorer``, else the classifier's
            logits, else none), ``'head'`` (the logits), the name of a
            ``ProbeScorer``, or ``None``. Without a prediction
            ``OoDMetric``'s ID accuracy is meaningless.
        data_preprocessor (dict, optional): default: ``CLIPDataPreprocessor``
            (BGR -> RGB) with the model's normalisation: timm's
            ``resolve_data_config`` mean / std (0.5 / 0.5 for timm's
            ImageNet-21k ViTs), or the mmpretrain model's (else ImageNet's).
    """

    def __init__(self,
                 source: str = 'timm',
                 model_name: Optional[str] = None,
                 model: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 model_kwargs: Optional[dict] = None,
                 feature: str = 'pre_logits',
                 input_size: Union[None, int, Sequence[int]] = None,
                 classnames: Union[None, str, Sequence[str]] = None,
                 ood_scorers: Sequence[dict] = (),
                 predict_with: Optional[str] = 'auto',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if source not in SOURCES:
            raise ValueError(f'FeatureBackbone: source must be one of '
                             f'{SOURCES}, got {source!r}')
        feature = backbone_feature(feature)
        kwargs = dict(model_kwargs or {})
        net, kind, arch_spec, arch, default_pre = self._build_net(
            source, model_name, model, kwargs)
        if data_preprocessor is None:
            data_preprocessor = dict(type='CLIPDataPreprocessor',
                                     **default_pre)
        data_preprocessor = dict(data_preprocessor)
        data_preprocessor.setdefault('type', 'CLIPDataPreprocessor')
        super().__init__(data_preprocessor=MODELS.build(data_preprocessor),
                         init_cfg=init_cfg)
        self.source = source
        self.feature = feature
        self.net_kind = kind  # 'timm' or 'mmpretrain': how features run
        self.net = net
        self.arch = arch
        self._arch_spec = arch_spec
        if pretrained is not None:
            self.load_pretrained(pretrained)
        self.net.requires_grad_(False)
        self.net.eval()
        self._dims = self._feature_dims(input_size)
        if self.feature == 'logits' and self._dims['logits'] is None:
            raise ValueError(
                f"FeatureBackbone ({arch}): feature='logits' needs a "
                'classifier; this model has none (num_classes=0 or no head)')
        self.scored = FeatureOutput(self._dims[self.feature])
        self.classnames = resolve_classnames(classnames)
        self.ood_scorers = self._build_scorers(ood_scorers)
        self._predict_with = self._check_predict_with(predict_with)
        self._prepared: set = set()
        self._predictor: Optional[str] = None
        self.register_load_state_dict_post_hook(
            lambda module, keys: module._prepared.clear())
        self.eval()

    # ----------------------------------------------------------- building
    @staticmethod
    def _build_net(source, model_name, model, kwargs):
        """``(net, kind, arch spec, arch name, default preprocessing)``."""
        if source == 'timm':
            if model is not None or not model_name:
                raise ValueError("FeatureBackbone: source='timm' takes "
                                 'model_name (a timm.create_model name), '
                                 'not model')
            timm = import_timm()
            net = timm.create_model(model_name, pretrained=False, **kwargs)
            spec = dict(source='timm', model_name=model_name,
                        model_kwargs=kwargs)
            pre = preprocessor_from_data_config(timm_data_config(net))
            return net, 'timm', spec, f'timm:{model_name}', dict(
                pre, to_rgb=True)
        if (model is None) == (not model_name):
            raise ValueError("FeatureBackbone: source='mmpretrain' takes "
                             'either model_name (a get_model name) or model '
                             '(a model config)')
        if model is not None and kwargs:
            raise ValueError('FeatureBackbone: model_kwargs go with '
                             'model_name; put them into the model config')
        if model is not None:
            cfg = dict(model.to_dict() if hasattr(model, 'to_dict')
                       else model)
            spec_model = {k: v for k, v in cfg.items()
                          if k not in ('data_preprocessor', 'init_cfg')}
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                net = MODELS.build(cfg)
            name = f'mmpretrain:{cfg.get("type")}'
            checked = cfg
        else:
            from mmpretrain.apis import get_model
            net = get_model(model_name, pretrained=False, **kwargs)
            spec_model = model_name
            name = f'mmpretrain:{model_name}'
            checked = getattr(net, '_config', {}).get('model', {})
        if _has_pretrained_init(checked):
            print_log(
                f'FeatureBackbone ({name}): the model config has an init_cfg '
                'of type Pretrained, which is not applied; the weights come '
                'from pretrained=', logger='current', level=logging.WARNING)
        spec = dict(source='mmpretrain', model=spec_model,
                    model_kwargs=kwargs)
        from mmpretrain.models import TimmClassifier
        if isinstance(net, TimmClassifier):
            timm_net = net.model
            pre = preprocessor_from_data_config(timm_data_config(timm_net))
            return timm_net, 'timm', spec, name, dict(pre, to_rgb=True)
        if not (hasattr(net, 'extract_feat') and hasattr(net, 'with_head')):
            raise TypeError(
                f'FeatureBackbone: {type(net).__name__} is not an mmpretrain '
                "classifier; wrap a backbone as dict(type='ImageClassifier', "
                "backbone=..., neck=dict(type='GlobalAveragePooling'))")
        return net, 'mmpretrain', spec, name, _mmpretrain_preprocessing(net)

    def load_pretrained(self, path: str) -> None:
        """Load the weights file ``path`` into the model (see the class
        doc); an error names the file and the mismatching keys."""
        state = read_state_dict(path)
        if self.net_kind == 'timm':
            state, dropped = adapt_timm_state_dict(state, self.net)
        else:
            state, dropped = adapt_mmpretrain_state_dict(state, self.net)
        if dropped:
            print_log(
                f'FeatureBackbone ({self.arch}): the model has no classifier;'
                f' ignored {dropped} of {path}', logger='current')
        load_state_dict_strict(self.net, state, f'weights file {path}')
        print_log(f'FeatureBackbone ({self.arch}): loaded {path}',
                  logger='current')

    def _feature_dims(self, input_size) -> Dict[str, Optional[int]]:
        net = self.net
        if self.net_kind == 'timm':
            pre = getattr(net, 'head_hidden_size', None) or net.num_features
            logits = int(getattr(net, 'num_classes', 0) or 0) or None
            return dict(pre_logits=int(pre), logits=logits)
        size = input_size or 224
        size = (size, size) if isinstance(size, int) else tuple(size)
        device = next(iter(net.parameters())).device
        with torch.no_grad():
            pre, logits = mmpretrain_features(
                net, torch.zeros(1, 3, *size, device=device),
                logits=bool(net.with_head))
        return dict(pre_logits=int(pre.shape[1]),
                    logits=None if logits is None else int(logits.shape[1]))

    def _build_scorers(self, ood_scorers) -> nn.ModuleList:
        scorers = [MODELS.build(cfg) for cfg in ood_scorers]
        for scorer in scorers:
            if isinstance(scorer, LOGIT_SCORERS):
                if self._dims['logits'] is None:
                    raise ValueError(
                        f'FeatureBackbone ({self.arch}): '
                        f'{type(scorer).__name__} scores the classifier\'s '
                        'logits; this model has no classifier (num_classes='
                        '0 or no head)')
            elif not isinstance(scorer, FEATURE_SCORERS):
                raise ValueError(
                    f'FeatureBackbone: {type(scorer).__name__} needs a CLIP '
                    'model (MultiModalClassifier); a FeatureBackbone feeds '
                    'ProbeScorer, MahalanobisScorer, KNNScorer and, for a '
                    'classifier, MSPScorer, MaxLogitScorer, EnergyScorer')
        check_unique_names(scorers)
        return nn.ModuleList(scorers)

    def _check_predict_with(self, predict_with):
        probes = [s.name for s in self.ood_scorers
                  if isinstance(s, ProbeScorer)]
        if predict_with in (None, 'auto') or predict_with in probes:
            return predict_with
        if predict_with == 'head':
            if self._dims['logits'] is None:
                raise ValueError(f"FeatureBackbone ({self.arch}): "
                                 "predict_with='head' needs a classifier")
            return predict_with
        raise ValueError(
            f"FeatureBackbone: predict_with must be 'auto', 'head', None or "
            f'the name of a ProbeScorer ({probes}), got {predict_with!r}')

    # ---------------------------------------------- the feature interface
    @property
    def file_kind(self) -> str:
        """The feature-file kind of ``feature``."""
        return FEATURE_KINDS[self.feature]

    def feature_dim(self, feature: str) -> int:
        """Size of ``feature`` (a backbone feature or a file kind)."""
        dim = self._dims[backbone_feature(feature)]
        if dim is None:
            raise ValueError(f'FeatureBackbone ({self.arch}) has no '
                             'classifier logits')
        return dim

    def _forward_net(self, images: torch.Tensor, logits: bool
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        fn = timm_features if self.net_kind == 'timm' else \
            mmpretrain_features
        return fn(self.net, images, logits)

    @torch.no_grad()
    def encode_features(self, images: torch.Tensor,
                        feature: str = 'pre_logits') -> torch.Tensor:
        """Un-normalised features ``(B, D)`` of a preprocessed batch;
        ``feature``: ``'pre_logits'`` / ``'pre_projection'`` or
        ``'logits'`` / ``'embedding'``."""
        name = backbone_feature(feature, 'encode_features')
        self.feature_dim(name)  # a clear error for missing logits
        pre, logits = self._forward_net(images, name == 'logits')
        return pre if name == 'pre_logits' else logits

    def feature_projection(self, feature: str) -> None:
        """No projection maps the stored features to other ones: ``None``
        (a feature file's ``projection``)."""
        backbone_feature(feature, 'feature_projection')
        return None

    def image_fingerprint(self) -> str:
        """sha256 of the architecture description and the weights
        (:func:`~cma_ood.models.backbones.functional.backbone_sha256`): the
        feature cache key and what scorers check their files against."""
        return backbone_sha256(self.net, self._arch_spec)

    # ------------------------------------------------------------- state
    def init_weights(self) -> None:
        """Nothing: the weights come from ``pretrained`` (MMEngine's
        initialisation would re-draw them)."""

    def train(self, mode: bool = True) -> 'FeatureBackbone':
        super().train(mode)
        self.net.eval()  # frozen: batch norm statistics, no dropout
        self._prepared.clear()
        return self

    # ------------------------------------------------------------ scorers
    def scorer_context(self) -> ScorerContext:
        """The :class:`~cma_ood.models.ood_scorers.ScorerContext` of this
        backbone: no text side; ``image_tower`` is :attr:`scored`."""
        context = ScorerContext(
            device=next(iter(self.net.parameters())).device,
            classnames=None if self.classnames is None else list(
                self.classnames),
            test_template='{}',
            context_length=0,
            embed_dim=self.scored.output_dim,
            image_tower=self.scored,
            class_embeddings=_no_text,
            encode_text=_no_text,
            text_fingerprint=_no_text,
            image_fingerprint=lambda: context.memoized(
                'image', self.image_fingerprint))
        return context

    def prepare_scorers(self, validating: bool = False) -> None:
        """Prepare the scorers not yet prepared for the current weights
        (:class:`~cma_ood.engine.hooks.PrepareScorersHook` calls this before
        the test loop) and check that their files hold this backbone's
        ``feature`` kind."""
        pending = [s for s in self.ood_scorers
                   if s.name not in self._prepared]
        context = self.scorer_context() if pending else None
        for scorer in pending:
            scorer.prepare(context)
            fitted = getattr(getattr(scorer, '_features', None), 'feature',
                             None)
            if fitted is not None and fitted != self.file_kind:
                raise ValueError(
                    f'{scorer.name}: fitted on {fitted} '
                    f'({_FEATURE_NAMES[fitted]}) features, but this '
                    f"FeatureBackbone scores feature='{self.feature}'; set "
                    f"feature='{_FEATURE_NAMES[fitted]}' or refit on "
                    f'{self.feature} features')
            self._prepared.add(scorer.name)
        self._predictor = self._resolve_predictor()

    def _resolve_predictor(self) -> Optional[str]:
        """The ProbeScorer name, ``'head'`` or ``None``."""
        if self._predict_with != 'auto':
            return self._predict_with
        for scorer in self.ood_scorers:
            if isinstance(scorer, ProbeScorer):
                return scorer.name
        return 'head' if self._dims['logits'] is not None else None

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
            return self.encode_features(inputs, self.feature)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs, data_samples):
        raise RuntimeError(
            'FeatureBackbone is a frozen feature extractor and is not '
            'trained: cache its features (tools/extract_features.py) and '
            'train a LinearProbe on them (configs/linear-probe/)')

    def _needs_logits(self) -> bool:
        return self.feature == 'logits' or self._predictor == 'head' or any(
            isinstance(s, LOGIT_SCORERS) for s in self.ood_scorers)

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """``ood_scores`` (``{name: float}``, higher = more ID; variants
        and ``ood_details`` as ``MultiModalClassifier``) and, with a
        predictor (``predict_with``), ``pred_score`` / ``pred_label``."""
        self.prepare_scorers()
        pre, logits = self._forward_net(inputs, self._needs_logits())
        feats = self.scored((pre if self.feature == 'pre_logits'
                             else logits).float())
        embeds = F.normalize(feats, dim=-1)
        cos = logits.float() if logits is not None else \
            feats.new_zeros((feats.shape[0], 0))
        scores, details = run_scorers(self.ood_scorers, embeds, cos,
                                      feats.new_ones(()))
        pred = self._prediction_logits(feats, logits)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        names = list(scores)
        rows = torch.stack([scores[n] for n in names], dim=1).cpu().tolist() \
            if names else [[] for _ in data_samples]
        probs = None if pred is None else pred.softmax(dim=-1).cpu()
        for i, (ds, row) in enumerate(zip(data_samples, rows)):
            ds.ood_scores = dict(zip(names, row))
            if probs is not None:
                ds.set_pred_score(probs[i]).set_pred_label(
                    probs[i].argmax(dim=-1, keepdim=True))
            if details:
                ds.ood_details = sample_details(details, i)
        return data_samples

    def _prediction_logits(self, feats: torch.Tensor,
                           logits: Optional[torch.Tensor]
                           ) -> Optional[torch.Tensor]:
        """Logits ``(B, C)`` of the ID prediction, or ``None``."""
        if self._predictor is None:
            return None
        if self._predictor == 'head':
            return logits.float()
        probe = next(s for s in self.ood_scorers
                     if s.name == self._predictor)
        return probe_logits(feats, probe.weight, probe.bias, probe.normalize,
                            probe.feat_mean, probe.feat_std)


def _mmpretrain_preprocessing(net: nn.Module) -> dict:
    """``dict(mean, std, to_rgb)`` of an mmpretrain model's data
    preprocessor, else ImageNet's (BGR files flipped to RGB)."""
    pre = getattr(net, 'data_preprocessor', None)
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if torch.is_tensor(mean) and torch.is_tensor(std) and getattr(
            pre, '_enable_normalize', True):
        return dict(mean=mean.flatten().tolist(), std=std.flatten().tolist(),
                    to_rgb=bool(getattr(pre, 'to_rgb', True)))
    return dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                to_rgb=True)
