"""Encode datasets once with an image model and cache the features.

    python tools/extract_features.py CONFIG [CKPT] [--split NAME ...]
        [--out-dir DIR] [--feature pre_projection|embedding]
        [--dtype float16] [--amp] [--force] [--cfg-options ...]
        [--launcher pytorch]

What is encoded comes from the config's ``feature_extraction`` dict (the
probe configs under configs/plp and configs/linear-probe have one)::

    feature_extraction = dict(
        model=dict(type='MultiModalClassifier', ...),  # default: cfg.model
                              # (or dict(type='FeatureBackbone', ...): a
                              # timm / mmpretrain model, docs/backbones.md)
        feature='pre_projection',  # PLP's features (default; a
                              # FeatureBackbone's pre-logits) or 'embedding'
                              # (CLIP's embeddings, a classifier's logits)
        classnames=None,      # pseudo-label class names: a list or a set
                              # name ('imagenet_first_synonym'); default:
                              # the model's (or the dataset's); CLIP only
        templates=[...],      # pseudo-label prompts; default: PLP's five
        dtype='float32',      # or 'float16'
        splits=dict(
            train=dict(dataloader=dict(...), out_file='data/features/x.pt'),
            val=dict(dataloader=dict(...), out_file=...)))

Without it, ``cfg.model`` and the config's ``{train,val,test}_dataloader``
are used and the files are content-addressed (``DIR/features_<key>.pt``,
``DIR`` = ``--out-dir`` or ``$CMA_OOD_CACHE/features``). ``CKPT`` (e.g. a
CMA-trained classifier) is loaded into the model first. Re-running with
the same weights and data reuses the files. Format: docs/probing.md.
Distributed: ``torchrun --nproc_per_node N tools/extract_features.py ...
--launcher pytorch``.
"""
import argparse
import copy
import logging
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.dist import get_dist_info, init_dist
from mmengine.logging import MMLogger, print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint, set_random_seed
from mmpretrain.registry import MODELS

from cma_ood.utils.checkpoint import (add_trust_checkpoint_argument,
                                      install_checkpoint_loader)

_SPLITS = ('train', 'val', 'test')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Cache image features of datasets (feature files) of a '
        'CLIP model or a FeatureBackbone (timm / mmpretrain)')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        default=None,
        help='classifier checkpoint loaded into the model (omit for the '
        'weights the config builds, e.g. OpenAI CLIP)')
    parser.add_argument(
        '--split',
        action='append',
        help='split(s) to encode (repeatable); default: all of the config')
    parser.add_argument(
        '--out-dir',
        help='write the files here (keeping the configured file names)')
    parser.add_argument(
        '--feature',
        choices=['pre_projection', 'embedding'],
        help='which image features to store (overrides the config; '
        'default pre_projection, the tower output before its projection, '
        'or a FeatureBackbone\'s pre-logits; embedding: CLIP\'s embeddings '
        'or a classifier\'s logits)')
    parser.add_argument(
        '--dtype',
        choices=['float32', 'float16'],
        help='storage dtype of the embeddings (overrides the config)')
    parser.add_argument(
        '--amp', action='store_true', help='encode under CUDA autocast')
    parser.add_argument(
        '--force', action='store_true', help='re-encode even if cached')
    parser.add_argument(
        '--seed',
        type=int,
        help='seed before building the model (default: the config\'s '
        'randomness.seed, else 0), so randomly initialised weights are '
        'reproducible')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    add_trust_checkpoint_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def extraction_plan(cfg: Config, splits=None, out_dir=None) -> dict:
    """``dict(model, feature, classnames, templates, dtype, splits={name:
    dict(dataloader, out_file, cache_dir)})`` from the config (see the
    module doc)."""
    spec = cfg.get('feature_extraction')
    if spec is not None:
        spec = copy.deepcopy(spec)
        model = spec.get('model') or cfg.model
        available = dict(spec.get('splits') or {})
        if not available:
            raise KeyError('feature_extraction.splits is empty in the '
                           'config')
    else:
        model = cfg.model
        available = {
            s: dict(dataloader=cfg.get(f'{s}_dataloader'))
            for s in _SPLITS if cfg.get(f'{s}_dataloader')
        }
        if not available:
            raise KeyError('the config has neither feature_extraction nor '
                           'train/val/test dataloaders')
    wanted = list(splits) if splits else list(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise KeyError(f'unknown split(s) {unknown}; the config defines '
                       f'{list(available)}')
    plan = {}
    for name in wanted:
        entry = dict(available[name])
        if not entry.get('dataloader'):
            raise KeyError(f'split {name!r} has no dataloader')
        out_file = entry.get('out_file')
        if out_dir is not None and out_file:
            out_file = osp.join(out_dir, osp.basename(out_file))
        plan[name] = dict(
            dataloader=entry['dataloader'],
            out_file=out_file,
            cache_dir=out_dir)
    spec = spec or {}
    templates = spec.get('templates', 'default')
    dtype = spec.get('dtype', 'float32')
    feature = spec.get('feature', 'pre_projection')
    if feature not in ('pre_projection', 'embedding'):
        raise ValueError("feature_extraction.feature must be "
                         f"'pre_projection' or 'embedding', got {feature!r}")
    classnames = spec.get('classnames')
    if classnames is not None and not isinstance(classnames, str):
        classnames = list(classnames)
    return dict(model=model, feature=feature, classnames=classnames,
                templates=templates, dtype=dtype, splits=plan)


def _warn_random_transforms(name: str, dataloader_cfg) -> None:
    pipeline = (dataloader_cfg.get('dataset') or {}).get('pipeline') or []
    random = [t.get('type') for t in pipeline
              if 'Random' in str(t.get('type', ''))]
    if random:
        print_log(
            f'split {name!r}: the pipeline has random transforms {random}; '
            'cached embeddings are usually taken with the test pipeline',
            logger='current', level=logging.WARNING)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    install_checkpoint_loader(trust=args.trust_checkpoint)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.launcher != 'none':
        init_dist(args.launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))
    MMLogger.get_instance('extract_features', log_level='INFO')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    import cma_ood  # noqa: F401  (registers the components)
    from cma_ood.engine.feature_extractor import (extract_features,
                                                  supports_pseudo_labels)
    from cma_ood.models.utils.zero_shot import PLP_TEMPLATES

    plan = extraction_plan(cfg, args.split, args.out_dir)
    seed = args.seed if args.seed is not None else \
        (cfg.get('randomness') or {}).get('seed') or 0
    set_random_seed(seed)
    model_cfg = copy.deepcopy(plan['model'])
    model = MODELS.build(model_cfg)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu',
                        strict=True)
    if torch.cuda.is_available():
        model = model.cuda()
    templates = plan['templates']
    if not supports_pseudo_labels(model):
        if plan['classnames'] is not None or templates not in ('default',
                                                               None):
            raise ValueError(
                f'{type(model).__name__} has no text tower, so there are '
                'no zero-shot pseudo-labels (PLP needs a CLIP model): '
                'remove feature_extraction.classnames and .templates from '
                "the config and probe with the true labels (target='labels')")
        templates = None
    elif templates == 'default':
        templates = PLP_TEMPLATES
    dtype = args.dtype or plan['dtype']
    feature = args.feature or plan['feature']
    rank, _ = get_dist_info()
    for name, split in plan['splits'].items():
        dl_cfg = copy.deepcopy(split['dataloader'])
        dl_cfg = dl_cfg.to_dict() if hasattr(dl_cfg, 'to_dict') else dl_cfg
        _warn_random_transforms(name, dl_cfg)
        sampler = dl_cfg.setdefault('sampler', dict(type='DefaultSampler'))
        sampler['shuffle'] = False
        dataset_cfg = copy.deepcopy(dl_cfg['dataset'])
        dataloader = Runner.build_dataloader(dl_cfg)
        print_log(f'split {name!r}: {len(dataloader.dataset)} samples',
                  logger='current')
        path = extract_features(
            model,
            dataloader,
            out_file=split['out_file'],
            cache_dir=split['cache_dir'],
            dataset_cfg=dataset_cfg,
            templates=templates,
            dtype=dtype,
            amp=args.amp,
            force=args.force,
            feature=feature,
            classnames=plan['classnames'])
        if rank == 0:
            print_log(f'split {name!r}: {path}', logger='current')


if __name__ == '__main__':
    main()
