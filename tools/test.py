"""Test a cma_ood model (same arguments as mmpretrain's tools/test.py)."""
import argparse
import os
import os.path as osp

import mmengine
from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from cma_ood.models.multimodal.open_clip_builder import (
    is_open_clip_arch, parse_open_clip_arch)
from cma_ood.utils.checkpoint import (add_trust_checkpoint_argument,
                                      install_checkpoint_loader)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Evaluate a cma_ood model (ID accuracy and OoD table)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        default=None,
        help='checkpoint file; omit it, or give "none" (what `mim test '
        '... --checkpoint none` passes), to test the weights the config '
        'builds (e.g. zero-shot OpenAI CLIP)')
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument(
        '--out', help='dump per-sample predictions to this pickle file')
    parser.add_argument(
        '--amp', action='store_true', help='run the test loop in fp16/bf16')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=64')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='set pin_memory=False in the test dataloader')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    add_trust_checkpoint_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.checkpoint is not None and args.checkpoint.lower() == 'none':
        args.checkpoint = None
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args) -> Config:
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    # testing builds no optimizer or training loop
    cfg.resume = False
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    if args.no_pin_memory:
        cfg.test_dataloader['pin_memory'] = False
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def is_random_init(model_cfg) -> bool:
    """Whether a model config builds random weights: ``pretrained`` is
    None and, for open_clip, ``arch`` names no pretrained tag."""
    if model_cfg.get('pretrained', 0) is not None:
        return False
    arch = model_cfg.get('arch')
    return not (is_open_clip_arch(arch)
                and parse_open_clip_arch(arch)[1] is not None)


def main():
    args = parse_args()
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl/.pickle file: {args.out}')
    cfg = merge_args(Config.fromfile(args.config), args)
    install_checkpoint_loader(trust=args.trust_checkpoint)
    runner = Runner.from_cfg(cfg)
    if cfg.load_from is None and is_random_init(cfg.model):
        runner.logger.warning(
            'Testing a randomly initialised model: no checkpoint was given '
            'and model.pretrained is None. Pass a checkpoint, or set '
            "model.pretrained ('openai' for OpenAI's CLIP, or a weights "
            "file; for open_clip, a tag in model.arch: "
            "'open_clip:MODEL/TAG'); the numbers below mean nothing "
            'otherwise.')
    if args.out is not None:
        mmengine.mkdir_or_exist(osp.dirname(osp.abspath(args.out)))
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
