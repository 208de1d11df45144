"""Serve cached CLIP image features (feature files) as a dataset."""
from typing import Dict, Optional, Sequence

import torch
from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset

from ..utils.feature_file import FEATURE_KINDS, load_feature_file

TARGETS = ('labels', 'pseudo_labels')


@DATASETS.register_module()
class CachedFeatureDataset(Dataset):
    """Features of a feature file (``tools/extract_features.py``) with
    their true or pseudo labels, for training probes in seconds per epoch.

    Item ``i`` is ``dict(inputs=feats[i], data_samples=target[i])``: a
    float32 ``(D,)`` feature as stored (un-normalised: the probe
    normalises, e.g. z-scores with the training statistics) and a 0-d
    int64 class index (not a ``DataSample``: building 1.28M of them per
    epoch would dominate the epoch time). With
    ``collate_fn=dict(type='default_collate')`` a batch is a ``(B, D)``
    tensor and a ``(B,)`` tensor, which
    :class:`~cma_ood.models.LinearProbe` takes directly (it also stacks the
    lists ``pseudo_collate`` gives).

    ``metainfo``: ``classes`` (the file's class names, else the configured
    ``classes``), ``feature_file``, ``feature`` (the kind of features,
    ``'pre_projection'`` or ``'embedding'``), ``target``, ``num_samples``
    and ``image_encoder_sha256``. MMEngine stores the training set's
    metainfo in every checkpoint, which lets
    :class:`~cma_ood.models.ProbeScorer` apply a probe to the same kind of
    features of the same image encoder.

    Args:
        feature_file (str): the feature file.
        target (str): ``'labels'`` (supervised linear probing) or
            ``'pseudo_labels'`` (PLP: argmax of the zero-shot classifier).
        classes (sequence[str], optional): class names when the file has
            none.
        sources (sequence[str], optional): keep only samples of these
            ``source_names`` (e.g. ``['ID']`` of a cached OoD benchmark).
        drop_unlabelled (bool): drop samples whose target is ``-1``
            instead of raising.
        feature (str, optional): the kind of features the file must hold
            (``'pre_projection'`` or ``'embedding'``); ``None`` accepts
            either.
    """

    def __init__(self,
                 feature_file: str,
                 target: str = 'labels',
                 classes: Optional[Sequence[str]] = None,
                 sources: Optional[Sequence[str]] = None,
                 drop_unlabelled: bool = False,
                 feature: Optional[str] = None):
        if target not in TARGETS:
            raise ValueError(f'CachedFeatureDataset: target must be one of '
                             f'{TARGETS}, got {target!r}')
        if feature is not None and feature not in FEATURE_KINDS:
            raise ValueError(f'CachedFeatureDataset: feature must be one of '
                             f'{list(FEATURE_KINDS)} or None, got '
                             f'{feature!r}')
        data = load_feature_file(feature_file, what='CachedFeatureDataset')
        kind = data['meta']['feature']
        if feature is not None and kind != feature:
            raise ValueError(
                f'CachedFeatureDataset: {feature_file} holds {kind} '
                f'features, the config expects {feature}; re-extract with '
                f'tools/extract_features.py --feature {feature}')
        targets = data.get(target)
        if targets is None and data['meta'].get('no_pseudo_labels'):
            raise ValueError(f'CachedFeatureDataset: {feature_file} has no '
                             f'{target}: {data["meta"]["no_pseudo_labels"]}')
        if targets is None:
            raise ValueError(
                f'CachedFeatureDataset: {feature_file} has no {target} (the '
                'model had no class names when it was extracted); set '
                'model.classnames and re-run tools/extract_features.py')
        keep = torch.ones(len(targets), dtype=torch.bool)
        if sources is not None:
            names = data['source_names']
            unknown = [s for s in sources if s not in names]
            if unknown:
                raise ValueError(f'CachedFeatureDataset: {feature_file} has '
                                 f'no source(s) {unknown}; it has {names}')
            wanted = torch.tensor([names.index(s) for s in sources])
            keep &= torch.isin(data['sources'], wanted)
        unlabelled = int(((targets < 0) & keep).sum())
        if unlabelled and not drop_unlabelled:
            raise ValueError(
                f'CachedFeatureDataset: {unlabelled} samples of '
                f'{feature_file} have no {target} (-1); select ID sources '
                'with sources=[...] or pass drop_unlabelled=True')
        keep &= targets >= 0
        if not keep.any():
            raise ValueError(f'CachedFeatureDataset: no samples left in '
                             f'{feature_file}')
        self.feats = data['feats'][keep]
        self.targets = targets[keep].clone()
        names = data.get('classnames') or (list(classes) if classes else
                                           None)
        if names is not None and int(self.targets.max()) >= len(names):
            raise ValueError(
                f'CachedFeatureDataset: {target} of {feature_file} reach '
                f'{int(self.targets.max())} but there are {len(names)} '
                'classes')
        self._metainfo = dict(
            classes=tuple(names) if names else None,
            feature_file=str(feature_file),
            feature=kind,
            target=target,
            num_samples=int(self.feats.shape[0]),
            image_encoder_sha256=data['meta'].get('image_encoder_sha256'))

    @property
    def metainfo(self) -> Dict:
        return dict(self._metainfo)

    @property
    def dim(self) -> int:
        return int(self.feats.shape[1])

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    def __getitem__(self, idx: int) -> dict:
        return dict(
            inputs=self.feats[idx].float(), data_samples=self.targets[idx])
