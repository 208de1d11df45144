"""Decode a batch of JPEG files and run their plans on a device.

The device half of :class:`~cma_ood.datasets.DecodeOnDevice`: the files
of a batch (packed by :func:`~cma_ood.datasets.stacked_collate`) are
decoded together (nvJPEG on a CUDA device, libjpeg-turbo on the CPU),
then each image is cropped, resized and flipped as its plan says
(:data:`~cma_ood.datasets.transforms.PLAN_FIELDS`). Images whose crop and
resize agree are resized in one call.

Numerics against the CPU pipeline (OpenCV's decoder, Pillow's resize on
uint8), measured in tests/test_models/test_utils/test_device_decode.py and
docs/benchmarks.md: the resize matches Pillow's to rounding (torch's
antialiased filters are Pillow's; the result is rounded to uint8 as
Pillow's is), the decoders differ by their IDCT and chroma upsampling.
"""
import warnings
from collections import defaultdict
from typing import Callable, List, Optional, Sequence

import mmcv
import numpy as np
import torch
import torch.nn.functional as F

from cma_ood.datasets.image_check import BrokenImageError

#: plan resize modes (see RESIZE_MODES) -> (torch mode, antialias)
_TORCH_MODES = {
    0: ('bilinear', True),
    1: ('bicubic', True),
    2: ('bilinear', False),
    3: ('bicubic', False),
}


def _decode_jpeg(buffers: List[torch.Tensor], device: torch.device):
    # imported here: torchvision.io loads its image codecs on first use
    from torchvision.io import ImageReadMode, decode_jpeg
    with warnings.catch_warnings():
        # torchvision >= 0.29 deprecates its decoders in favour of
        # TorchCodec, which has no batched nvJPEG path yet
        warnings.simplefilter('ignore', category=UserWarning)
        warnings.simplefilter('ignore', category=DeprecationWarning)
        return decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device)


def decode_files(buffers: List[torch.Tensor], device: torch.device,
                 names: Optional[Sequence[str]] = None) -> List[torch.Tensor]:
    """Decode JPEG ``buffers`` (uint8 CPU tensors) to RGB images.

    A batch that the decoder refuses is decoded file by file; a file that
    it refuses is decoded on the CPU by mmcv (OpenCV), as the CPU pipeline
    would; a file that neither decodes raises :class:`BrokenImageError`
    naming it (``names[i]``).

    Returns:
        list of uint8 ``(3, H_i, W_i)`` RGB tensors on ``device``.
    """
    try:
        return list(_decode_jpeg(buffers, device))
    except RuntimeError:
        pass
    images = []
    for i, buf in enumerate(buffers):
        try:
            images.append(_decode_jpeg([buf], device)[0])
            continue
        except RuntimeError:
            pass
        name = names[i] if names is not None else f'file {i} of the batch'
        try:
            bgr = mmcv.imfrombytes(buf.numpy().tobytes(), flag='color')
        except Exception as err:
            bgr, problem = None, f'{type(err).__name__}: {err}'
        else:
            problem = 'no image decoded'
        if bgr is None:
            raise BrokenImageError(
                f'Broken image file {name}: not a decodable image '
                f'({problem}). Replace or delete it; OoD test sets can skip '
                'such files with OoDConcatDataset(skip_broken=True)')
        images.append(
            torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(
                2, 0, 1).to(device))
    return images


def resize_uint8(images: torch.Tensor, size: Sequence[int],
                 mode: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to ``size`` with plan ``mode``.

    As Pillow does for uint8 images, in two passes (width, then height),
    each rounded to uint8: this matches Pillow's result to rounding
    (Pillow >= 13 resizes the height first for images shrunk much more in
    height than in width, which differs by about 0.2 grey levels on
    average); OpenCV's modes in one pass.
    """
    torch_mode, antialias = _TORCH_MODES[int(mode)]
    out_h, out_w = (int(s) for s in size)

    def resize(x, hw):
        x = F.interpolate(
            x.float(),
            size=hw,
            mode=torch_mode,
            align_corners=False,
            antialias=antialias)
        return x.round_().clamp_(0, 255).to(torch.uint8)

    if not antialias:
        return resize(images, (out_h, out_w))
    if images.shape[-1] != out_w:
        images = resize(images, (images.shape[-2], out_w))
    if images.shape[-2] != out_h:
        images = resize(images, (out_h, out_w))
    return images


def run_plans(images: Sequence[torch.Tensor],
              plans: torch.Tensor) -> torch.Tensor:
    """Apply ``plans`` (int64 ``(N, 12)``) to decoded ``images``.

    All plans must end in the same size.

    Returns:
        uint8 ``(N, 3, h1, w1)`` RGB.
    """
    rows = plans.tolist()
    out_sizes = {(r[9], r[10]) for r in rows}
    if len(out_sizes) != 1:
        raise ValueError('DecodeOnDevice: the images of a batch must end in '
                         f'one size, got {sorted(out_sizes)}')
    (h1, w1), = out_sizes
    device = images[0].device
    out = torch.empty((len(rows), 3, h1, w1), dtype=torch.uint8,
                      device=device)
    groups = defaultdict(list)  # same crop size, resize and input size
    for i, (img, r) in enumerate(zip(images, rows)):
        y0, x0, h0, w0 = r[:4]
        if y0 + h0 > img.shape[1] or x0 + w0 > img.shape[2]:
            raise ValueError(
                f'DecodeOnDevice: the crop {r[:4]} exceeds the decoded image '
                f'{tuple(img.shape[1:])}: the file header and its data '
                'disagree')
        groups[(h0, w0, r[4], r[5], r[6])].append(i)
    for (h0, w0, out_h, out_w, mode), idx in groups.items():
        crops = torch.stack([
            images[i][:, rows[i][0]:rows[i][0] + h0,
                      rows[i][1]:rows[i][1] + w0] for i in idx
        ])
        if (out_h, out_w) != (h0, w0):
            crops = resize_uint8(crops, (out_h, out_w), mode)
        for j, i in enumerate(idx):
            y1, x1 = rows[i][7], rows[i][8]
            img = crops[j, :, y1:y1 + h1, x1:x1 + w1]
            out[i] = img.flip(-1) if rows[i][11] else img
    return out


def decode_batch(encoded: dict,
                 device: torch.device,
                 names: Optional[Sequence[str]] = None,
                 decode: Callable = decode_files) -> torch.Tensor:
    """Decode and transform the files of a ``stacked_collate`` ``encoded``
    entry on ``device``.

    Returns:
        uint8 ``(n, 3, h, w)`` RGB images, in the order of
        ``encoded['positions']``.
    """
    data, offsets = encoded['data'], encoded['offsets'].tolist()
    buffers = [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    images = decode(buffers, device, names)
    return run_plans(images, encoded['plans'])
