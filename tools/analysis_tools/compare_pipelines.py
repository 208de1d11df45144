"""Compare DecodeOnDevice with the CPU pipeline on the same image files.

    python tools/analysis_tools/compare_pipelines.py [--data DIR] [--num 256]
        [--odd-files] [--arch ViT-B/16] [--out result.json]

For each CLIP pipeline of configs/_base_/datasets/pipelines/clip.py, the
files go through the CPU pipeline and through ``DecodeOnDevice`` (decoded on
the GPU with nvJPEG where CUDA is present, with libjpeg-turbo on the CPU
otherwise), with the same random crops; reported per pipeline: how many
files were decoded on the device, the mean and largest absolute difference
of the preprocessed images (grey levels, 0-255), the share of values more
than 2 levels apart, and the cosine between the image embeddings of a
randomly initialised ``--arch`` (``--arch none`` skips it). Without
``--data`` an ImageNet-like tree of ``--num`` JPEGs is generated (as
``benchmark.py --mode e2e-*``); ``--odd-files`` adds a PNG, a greyscale, a
CMYK, a progressive and an EXIF-rotated JPEG, which must take the CPU path.
``--time`` also times the device decode of one batch.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import tempfile
import time

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PIPELINES = ('test_pipeline', 'test_pipeline_bilinear', 'train_pipeline')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', help='folder of images (recursive); '
                        'default: a generated ImageNet-like JPEG tree')
    parser.add_argument('--num', type=int, default=256,
                        help='images to generate or take (default 256)')
    parser.add_argument('--odd-files', action='store_true',
                        help='add PNG, greyscale, CMYK, progressive and '
                        'EXIF-rotated files')
    parser.add_argument('--pipelines', nargs='+', default=list(PIPELINES))
    parser.add_argument('--arch', default='ViT-B/16',
                        help="CLIP architecture for the embedding cosine "
                        "(random weights), or 'none'")
    parser.add_argument('--time', action='store_true',
                        help='time the device decode of one batch')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args()


def odd_files(folder: str, source: str):
    """Files that DecodeOnDevice must leave to the CPU pipeline (and a
    progressive JPEG, which it decodes on the device)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    base = Image.open(source).convert('RGB')
    paths = [osp.join(folder, n) for n in
             ('png.png', 'grey.jpg', 'cmyk.jpg', 'progressive.jpg',
              'rotated.jpg')]
    base.save(paths[0])
    base.convert('L').save(paths[1], quality=90)
    base.convert('CMYK').save(paths[2], quality=90)
    base.save(paths[3], quality=90, progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(paths[4], quality=90, exif=exif)
    return paths


def compare(name, pipeline, paths, device, model):
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import MODELS, TRANSFORMS

    from cma_ood.datasets import stacked_collate
    from cma_ood.models.multimodal.classifier import CLIP_MEAN, CLIP_STD
    cpu = Compose(pipeline)
    dev = TRANSFORMS.build(
        dict(type='DecodeOnDevice', pipeline=pipeline, enabled=True))
    a, b = [], []
    for i, path in enumerate(paths):
        np.random.seed(i)
        a.append(cpu(dict(img_path=path)))
        np.random.seed(i)
        b.append(dev(dict(img_path=path)))
    raw = MODELS.build(dict(type='CLIPDataPreprocessor', mean=[0, 0, 0],
                            std=[1, 1, 1], to_rgb=True)).to(device)
    want, got = raw(pseudo_collate(a))['inputs'], raw(stacked_collate(b))[
        'inputs']
    diff = (want - got).abs()
    out = dict(
        pipeline=name,
        files=len(paths),
        decoded_on_device=sum('encoded' in s for s in b),
        mean_abs_difference=diff.mean().item(),
        max_abs_difference=diff.max().item(),
        share_more_than_2_levels=(diff > 2).float().mean().item(),
        worst_image_mean_abs_difference=diff.flatten(1).mean(1).max().item())
    if model is not None:
        norm = MODELS.build(dict(type='CLIPDataPreprocessor', mean=CLIP_MEAN,
                                 std=CLIP_STD, to_rgb=True)).to(device)
        with torch.no_grad():
            ea = model.encode_image(norm(pseudo_collate(a))['inputs'])
            eb = model.encode_image(norm(stacked_collate(b))['inputs'])
        cos = torch.nn.functional.cosine_similarity(ea.float(), eb.float())
        out.update(embedding_cosine_mean=cos.mean().item(),
                   embedding_cosine_min=cos.min().item())
    return out, dev, b


def time_decode(batch, device):
    from cma_ood.datasets import stacked_collate
    from cma_ood.models.utils.device_decode import decode_batch
    encoded = stacked_collate(batch)['encoded']
    n = len(encoded['positions'])

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    for _ in range(3):
        decode_batch(encoded, device)
    sync()
    start = time.perf_counter()
    for _ in range(10):
        decode_batch(encoded, device)
    sync()
    return dict(images=n,
                decode_and_transform_img_per_s=10 * n /
                (time.perf_counter() - start))


def main():
    args = parse_args()
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from e2e_benchmark import make_jpeg_tree
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmengine.registry import init_default_scope

    import cma_ood  # noqa: F401 (registers the components)
    init_default_scope('mmpretrain')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if args.data:
        paths = sorted(
            p for p in glob.glob(osp.join(args.data, '**', '*'),
                                 recursive=True) if osp.isfile(p))[:args.num]
        if not paths:
            raise SystemExit(f'--data {args.data}: no files found')
    else:
        root = osp.join(tempfile.gettempdir(), 'cma_ood_compare')
        folder = make_jpeg_tree(root, dict(img=(1, args.num)), seed=5)['img']
        paths = sorted(glob.glob(osp.join(folder, '*.jpg')))
    if args.odd_files:
        paths += odd_files(
            osp.join(tempfile.mkdtemp(prefix='odd_')), paths[0])
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'datasets', 'pipelines',
                 'clip.py'))
    model = None
    if args.arch != 'none':
        from cma_ood.models import MultiModalClassifier
        model = MultiModalClassifier(arch=args.arch, pretrained=None,
                                     classnames=['a', 'b']).to(device).eval()
    results = dict(device=(torch.cuda.get_device_name() if device.type ==
                           'cuda' else 'cpu'),
                   torch=torch.__version__, date=time.strftime('%Y-%m-%d'),
                   arch=args.arch, pipelines=[])
    batch = None
    for name in args.pipelines:
        row, _, samples = compare(name, cfg[name], paths, device, model)
        results['pipelines'].append(row)
        batch = batch or samples
    if args.time:
        results['timing'] = time_decode(
            [s for s in batch if 'encoded' in s], device)
    text = json.dumps(results, indent=2)
    print_log('\n' + text, logger='current')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
