"""Train a cma_ood model (same arguments as mmpretrain's tools/train.py)."""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from cma_ood.utils.checkpoint import (add_trust_checkpoint_argument,
                                      install_checkpoint_loader,
                                      resume_checkpoint)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a cma_ood model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir if no path is given')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: bf16 where the GPU supports it, else fp16 '
        'with dynamic loss scaling')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by (global batch / auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='set pin_memory=False in every dataloader')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='set persistent_workers=False in every dataloader')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.loss.lam=0.01')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    add_trust_checkpoint_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args) -> Config:
    """Apply the command-line arguments to the config."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        from cma_ood.engine import amp_optim_wrapper_cfg
        cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper)
    if args.resume == 'auto':
        # the checkpoint last_checkpoint names if it is complete, else the
        # newest complete one; none: start from scratch (MMEngine would log
        # "resumed from the latest checkpoint None")
        latest = resume_checkpoint(cfg.work_dir)
        cfg.resume = latest is not None
        cfg.load_from = latest
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader is None:
            continue
        if args.no_pin_memory:
            loader['pin_memory'] = False
        if args.no_persistent_workers:
            loader['persistent_workers'] = False
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def resume_command(args, cfg) -> str:
    """The command that resumes this run from its latest checkpoint."""
    parts = ['python tools/train.py', args.config, '--work-dir', cfg.work_dir,
             '--resume']
    if args.launcher != 'none':
        parts = [f'(your {args.launcher} launcher with)'] + parts + [
            '--launcher', args.launcher]
    return ' '.join(parts)


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    install_checkpoint_loader(trust=args.trust_checkpoint)
    runner = Runner.from_cfg(cfg)
    if args.resume == 'auto' and not cfg.resume:
        runner.logger.info(
            f'--resume: no checkpoint in {cfg.work_dir} yet, starting from '
            'scratch')
    try:
        runner.train()
    except KeyboardInterrupt:
        done = (f'after {runner.epoch} completed epoch(s), iteration '
                f'{runner.iter}')
        sys.exit(f'Interrupted {done}. Resume from the last checkpoint in '
                 f'{cfg.work_dir} with: {resume_command(args, cfg)}')


if __name__ == '__main__':
    main()
