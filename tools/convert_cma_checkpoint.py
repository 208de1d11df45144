#!/usr/bin/env python
"""Convert a published CMA checkpoint or an OpenAI CLIP ``.pt`` file into a
checkpoint that ``tools/test.py`` (and ``load_from``) loads.

Inputs: the CMA release layout ``{'epoch', 'model_state_dict',
'optimizer_state_dict'}`` (``module.``-prefixed openai-clip names), OpenAI's
TorchScript archives (``ViT-B-16.pt``, ...), or a plain state dict. Pickled
inputs are read with ``torch.load(weights_only=True)``; pass
``--trust-checkpoint`` only for files you trust that need more.

Example::

    python tools/convert_cma_checkpoint.py cma_vit-b16.pth \\
        checkpoints/cma_clip-vit-b16_in1k.pth
    python tools/test.py \\
        configs/cma/cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py \\
        checkpoints/cma_clip-vit-b16_in1k.pth
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.logging import print_log  # noqa: E402

from cma_ood.models.multimodal.clip_builder import list_clip_archs  # noqa: E402
from cma_ood.utils.checkpoint import add_trust_checkpoint_argument  # noqa
from cma_ood.utils.convert import convert_checkpoint  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a CMA release checkpoint or an OpenAI CLIP .pt '
        'file into a cma_ood checkpoint')
    parser.add_argument('src', help='input checkpoint')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--arch',
        choices=list_clip_archs(),
        help='expected CLIP architecture (default: inferred from the '
        'weights)')
    add_trust_checkpoint_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    meta = convert_checkpoint(args.src, args.dst, arch=args.arch,
                              trust=args.trust_checkpoint)
    print_log(
        f'Converted {args.src} ({meta["source_format"]}, CLIP '
        f'{meta["arch"]}) into {args.dst}', logger='current')


if __name__ == '__main__':
    main()
