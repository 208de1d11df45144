"""Decode JPEGs and apply the geometric transforms on the GPU.

On a CUDA machine the dataloader workers of a CPU pipeline spend most of
their time decoding JPEGs and resizing them (docs/benchmarks.md). With
:class:`DecodeOnDevice` around that pipeline the workers only read the
file and draw the random parameters of its transforms (a crop box, a
flip); :func:`stacked_collate` packs a batch's files into one byte buffer,
and ``CLIPDataPreprocessor`` decodes the batch with nvJPEG and runs the
crops and resizes on the GPU (:mod:`cma_ood.models.utils.device_decode`).

A *plan* records what the pipeline does to one image, as 12 integers
(:data:`PLAN_FIELDS`): crop the decoded image to ``(y0, x0, h0, w0)``,
resize it to ``(out_h, out_w)`` with ``mode`` (:data:`RESIZE_MODES`; no
resize when the size does not change), crop the result to
``(y1, x1, h1, w1)``, and flip it horizontally if ``flip``. The supported
transforms are those of cma_ood's pipelines: mmpretrain's ``ResizeEdge``
and ``RandomResizedCrop``, mmcv's ``CenterCrop`` (without ``auto_pad``)
and ``RandomFlip`` (horizontal, last). Their random parameters are drawn
by the transforms' own code from the same generators, so a seeded
pipeline gives the same crops on both paths.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform, CenterCrop, Compose, RandomFlip
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmpretrain.datasets.transforms import (PackInputs, RandomResizedCrop,
                                            ResizeEdge)
from mmpretrain.registry import TRANSFORMS

from ..image_check import image_data_problem
from .jpeg_header import jpeg_header

#: the fields of a plan, in order
PLAN_FIELDS = ('y0', 'x0', 'h0', 'w0', 'out_h', 'out_w', 'mode', 'y1', 'x1',
               'h1', 'w1', 'flip')
#: resize modes of a plan: (mmcv backend, interpolation) -> code. Pillow
#: resizes with an antialiasing filter (torch's ``antialias=True``), OpenCV
#: without
RESIZE_MODES = {
    ('pillow', 'bilinear'): 0,
    ('pillow', 'bicubic'): 1,
    ('cv2', 'bilinear'): 2,
    ('cv2', 'bicubic'): 3,
}
#: frac(i * golden ratio) spreads indices evenly over [0, 1)
_GOLDEN = (5 ** 0.5 - 1) / 2
_SUPPORTED = (ResizeEdge, RandomResizedCrop, CenterCrop, RandomFlip)


def _mode(transform) -> int:
    key = (transform.backend, transform.interpolation)
    if key not in RESIZE_MODES:
        raise ValueError(
            f'DecodeOnDevice: {type(transform).__name__} with backend='
            f'{key[0]!r}, interpolation={key[1]!r} has no GPU equivalent; '
            f'supported (backend, interpolation): {sorted(RESIZE_MODES)}')
    return RESIZE_MODES[key]


def plan_geometry(transforms: Sequence[BaseTransform], height: int,
                  width: int) -> np.ndarray:
    """The plan of ``transforms`` for an image of ``height x width``.

    Random parameters are drawn exactly as the transforms draw them on an
    image of that size (same calls to numpy's global generator, in the
    same order).

    Returns:
        int64 array ``(12, )`` in :data:`PLAN_FIELDS` order.
    """
    y0, x0, h0, w0 = 0, 0, height, width
    out_h, out_w, mode = height, width, -1
    y1, x1, h1, w1 = 0, 0, height, width
    flip = 0
    for t in transforms:
        resized = mode >= 0
        if flip:
            raise ValueError('DecodeOnDevice: RandomFlip must be the last '
                             'geometric transform of the pipeline')
        if isinstance(t, (ResizeEdge, RandomResizedCrop)):
            if resized or (h1, w1) != (out_h, out_w):
                raise ValueError(
                    f'DecodeOnDevice: {type(t).__name__} after a resize or '
                    'a crop of a resized image is not supported')
            if isinstance(t, RandomResizedCrop):
                dy, dx, h0, w0 = t.rand_crop_params(
                    np.empty((h0, w0, 0), np.uint8))
                y0, x0 = y0 + dy, x0 + dx
                out_h, out_w = t.scale
            else:
                short_w = (t.edge == 'short' and w0 < h0) or (
                    t.edge == 'long' and w0 > h0) or t.edge == 'width'
                if short_w:
                    out_w, out_h = t.scale, int(t.scale * h0 / w0)
                else:
                    out_h, out_w = t.scale, int(t.scale * w0 / h0)
            mode = _mode(t)
            y1, x1, h1, w1 = 0, 0, out_h, out_w
        elif isinstance(t, CenterCrop):
            if t.auto_pad:
                raise ValueError('DecodeOnDevice: CenterCrop(auto_pad=True)'
                                 ' is not supported')
            crop_w, crop_h = t.crop_size
            crop_h, crop_w = min(crop_h, h1), min(crop_w, w1)
            dy = max(0, int(round((h1 - crop_h) / 2.)))
            dx = max(0, int(round((w1 - crop_w) / 2.)))
            if resized:
                y1, x1, h1, w1 = y1 + dy, x1 + dx, crop_h, crop_w
            else:  # a crop of the original image
                y0, x0, h0, w0 = y0 + dy, x0 + dx, crop_h, crop_w
                out_h, out_w = h0, w0
                y1, x1, h1, w1 = 0, 0, h0, w0
        elif isinstance(t, RandomFlip):
            direction = t._choose_direction()
            if direction not in (None, 'horizontal'):
                raise ValueError('DecodeOnDevice: only horizontal flips are '
                                 f'supported, got {direction!r}')
            flip = int(direction == 'horizontal')
        else:
            raise ValueError(
                f'DecodeOnDevice: {type(t).__name__} has no GPU '
                'equivalent; supported: '
                f'{", ".join(c.__name__ for c in _SUPPORTED)}')
    return np.array(
        [y0, x0, h0, w0, out_h, out_w, mode, y1, x1, h1, w1, flip],
        dtype=np.int64)


@TRANSFORMS.register_module()
class DecodeOnDevice(BaseTransform):
    """Run a CPU image pipeline's decoding and geometry on the GPU.

    ``pipeline`` is a complete CPU pipeline: a loader
    (``CheckedLoadImageFromFile`` or ``LoadImageFromFile``), geometric
    transforms (see the module docstring) and ``PackInputs``. For each
    sample, this transform reads the file and

    * if it is an upright 8-bit YCbCr JPEG (:func:`jpeg_header`) and
      complete (the loader's corrupt-file rules), gives ``PackInputs``'s
      data sample without ``inputs`` but with ``encoded``: the file's bytes
      and the plan of the geometric transforms (:func:`plan_geometry`).
      ``stacked_collate`` packs these, and ``CLIPDataPreprocessor`` decodes
      them on the model's device;
    * otherwise (PNG and other formats, greyscale, CMYK, RGB-coded or
      EXIF-rotated JPEGs, broken files), runs ``pipeline`` on the CPU, so
      the file is decoded exactly as without this wrapper and broken files
      raise the loader's error naming the file.

    Args:
        pipeline (list[dict]): the CPU pipeline.
        enabled (bool, optional): ``None`` (default): where CUDA is
            available; ``False``: always the CPU pipeline (exactly as
            without this wrapper); ``True``: always (the preprocessor then
            decodes on whatever device the model is on, e.g. with
            libjpeg-turbo on the CPU: for tests).
        subsampled (str): where JPEGs with subsampled chroma (4:2:0 etc.:
            almost every photograph) are decoded: ``'device'`` (default) or
            ``'cpu'``. nvJPEG upsamples their chroma differently from
            libjpeg-turbo (about 2 grey levels on average on ImageNet-like
            files); files without subsampling decode identically
            (docs/fidelity.md). ``'cpu'`` keeps the CPU pipeline's exact
            images and decodes only 4:4:4 files on the GPU.
        cpu_share (float): share of the files the GPU could decode that are
            decoded on the CPU by the dataloader workers anyway (the CPU
            pipeline, exactly as without this wrapper), in ``[0, 1]``.
            Splits the decoding between the workers' cores and the GPU,
            which otherwise decodes while it also runs the model
            (docs/benchmarks.md). Which files: those whose dataset index
            ``i`` has ``frac((i + 1) * golden ratio) < cpu_share``, a
            low-discrepancy rule that spreads them evenly over any run of
            consecutive indices and depends on nothing else (the same files
            in every epoch, worker and run). Defaults to 0.
    """

    def __init__(self, pipeline: Sequence[dict],
                 enabled: Optional[bool] = None,
                 subsampled: str = 'device',
                 cpu_share: float = 0.0):
        if not 0.0 <= cpu_share <= 1.0:
            raise ValueError('DecodeOnDevice: cpu_share must be in [0, 1], '
                             f'got {cpu_share!r}')
        self.cpu_share = float(cpu_share)
        self._count = 0
        if subsampled not in ('device', 'cpu'):
            raise ValueError("DecodeOnDevice: subsampled must be 'device' or "
                             f"'cpu', got {subsampled!r}")
        self.subsampled = subsampled
        self.cpu_pipeline = Compose([
            TRANSFORMS.build(t) if isinstance(t, dict) else t
            for t in pipeline
        ])
        transforms = self.cpu_pipeline.transforms
        if len(transforms) < 2 or not isinstance(
                transforms[0], LoadImageFromFile) or not isinstance(
                    transforms[-1], PackInputs):
            raise ValueError(
                'DecodeOnDevice: pipeline must start with a '
                'LoadImageFromFile-like loader and end with PackInputs, got '
                f'{[type(t).__name__ for t in transforms]}')
        self.loader = transforms[0]
        if self.loader.color_type != 'color' or self.loader.to_float32:
            raise ValueError(
                'DecodeOnDevice: the loader must give uint8 colour images '
                "(color_type='color', to_float32=False)")
        self.geometry: List[BaseTransform] = list(transforms[1:-1])
        self.pack = transforms[-1]
        # check the chain once on a typical size (errors at build time)
        state = np.random.get_state()
        try:
            plan_geometry(self.geometry, 375, 500)
        finally:
            np.random.set_state(state)
        if enabled is None:
            enabled = torch.cuda.is_available()
        self.enabled = bool(enabled)

    def _read(self, path: str) -> Optional[bytes]:
        try:
            return fileio.get(path, backend_args=self.loader.backend_args)
        except Exception:  # the CPU pipeline raises the loader's error
            return None

    def on_cpu(self, index: Optional[int]) -> bool:
        """Whether the sample of dataset index ``index`` is one of the
        ``cpu_share`` decoded on the CPU (``None``: the next of this
        transform's own count)."""
        if self.cpu_share <= 0:
            return False
        if index is None:
            index, self._count = self._count, self._count + 1
        return ((index + 1) * _GOLDEN) % 1.0 < self.cpu_share

    def transform(self, results: dict) -> Optional[dict]:
        if not self.enabled or self.on_cpu(results.get('sample_idx')):
            return self.cpu_pipeline(results)
        data = self._read(results['img_path'])
        header = None if data is None else jpeg_header(data)
        if header is None or not header.is_plain_ycbcr or (
                self.subsampled == 'cpu' and header.chroma_subsampled
        ) or image_data_problem(data) is not None:
            return self.cpu_pipeline(results)
        plan = plan_geometry(self.geometry, header.height, header.width)
        results['ori_shape'] = (header.height, header.width)
        results['img_shape'] = (int(plan[9]), int(plan[10]))
        packed = self.pack(results)
        packed['encoded'] = dict(
            data=np.frombuffer(data, np.uint8), plan=plan)
        return packed

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(enabled={self.enabled}, '
                f'subsampled={self.subsampled!r}, '
                f'cpu_share={self.cpu_share}, '
                f'pipeline={self.cpu_pipeline!r})')
