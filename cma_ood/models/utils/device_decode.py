"""Decode a batch of JPEG files and run their plans on a device.

The device half of :class:`~cma_ood.datasets.DecodeOnDevice`: the files
of a batch (packed by :func:`~cma_ood.datasets.stacked_collate`) are
decoded together (nvJPEG on a CUDA device, libjpeg-turbo on the CPU),
then each image is cropped, resized and flipped as its plan says
(:data:`~cma_ood.datasets.transforms.PLAN_FIELDS`). With Pillow's
filters (the CLIP pipelines) the whole batch is resized by two batched
matrix products with Pillow's own weights, order of passes and rounding
(:func:`run_plans_batched`: bit-identical to Pillow); OpenCV's filters go
image by image through ``torch.nn.functional.interpolate``
(:func:`run_plans`).

Numerics against the CPU pipeline (OpenCV's decoder, Pillow's resize on
uint8): tests/test_datasets/test_decode_on_device.py (bit-identical on the
CPU) and docs/benchmarks.md (on a GPU the decoders differ: nvJPEG
upsamples subsampled chroma differently from libjpeg-turbo).
"""
import warnings
from collections import defaultdict
from typing import List, Optional, Sequence

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


def _check_plans(images: Sequence[torch.Tensor], rows: list):
    """The common output size ``(h1, w1)`` of the plans ``rows``; raises
    if they end in several sizes or a crop exceeds its decoded image."""
    out_sizes = {(r[9], r[10]) for r in rows}
    if len(out_sizes) != 1:
        raise ValueError('DecodeOnDevice: the images of a batch must end in '
                         f'one size, got {sorted(out_sizes)}')
    for img, r in zip(images, rows):
        if r[0] + r[2] > img.shape[1] or r[1] + r[3] > img.shape[2]:
            raise ValueError(
                f'DecodeOnDevice: the crop {r[:4]} exceeds the decoded image '
                f'{tuple(img.shape[1:])}: the file header and its data '
                'disagree')
    return out_sizes.pop()


def run_plans(images: Sequence[torch.Tensor],
              plans: torch.Tensor) -> torch.Tensor:
    """Apply ``plans`` (int64 ``(N, 12)``) to decoded ``images``.

    All plans must end in the same size.

    Returns:
        uint8 ``(N, 3, h1, w1)`` RGB.
    """
    rows = plans.tolist()
    h1, w1 = _check_plans(images, rows)
    device = images[0].device
    out = torch.empty((len(rows), 3, h1, w1), dtype=torch.uint8,
                      device=device)
    groups = defaultdict(list)  # same crop size, resize and input size
    for i, r in enumerate(rows):
        groups[(r[2], r[3], r[4], r[5], r[6])].append(i)
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


#: Pillow's filters of the plan modes 0 (bilinear) and 1 (bicubic, a = -0.5)
#: and their supports
_PIL_SUPPORT = {0: 1.0, 1: 2.0}
#: Pillow's fixed-point precision of uint8 resampling coefficients
_PRECISION_BITS = 22


def _pil_filter(x: torch.Tensor, mode: int) -> torch.Tensor:
    x = x.abs()
    if mode == 0:
        return (1 - x).clamp(min=0)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, 0.0))


def pil_weights(in_size: torch.Tensor, out_size: torch.Tensor,
                offset: torch.Tensor, first: torch.Tensor, count: int,
                flip: torch.Tensor, mode: int, width: int) -> torch.Tensor:
    """Pillow's resampling weights of one axis, for a batch of images.

    Image ``n`` takes ``in_size[n]`` source pixels from ``offset[n]`` on
    (its crop), resizes them to ``out_size[n]`` with Pillow's filter of
    ``mode`` and keeps ``count`` outputs from ``first[n]`` on (the crop of
    the resized image), reversed where ``flip[n]``. The weights are
    Pillow's (``precompute_coeffs``: the filter widened by the downscaling
    factor, normalised per output, then rounded to Pillow's fixed point);
    an axis that is not resized gets one-hot weights.

    Args:
        in_size, out_size, offset, first, flip: int64 ``(N, )``.
        width: the padded source length.

    Returns:
        float64 ``(N, count, width)``: output ``j`` of image ``n`` is
        ``weights[n, j] @ source[n]``.
    """
    device = in_size.device
    n = in_size.shape[0]
    j = torch.arange(count, device=device).expand(n, count)
    j = torch.where(flip.view(-1, 1).bool(), count - 1 - j, j)
    out_index = (first.view(-1, 1) + j).double()  # in the resized image
    scale = (in_size.double() / out_size.double()).view(-1, 1, 1)
    filterscale = scale.clamp(min=1.0)
    center = (out_index.unsqueeze(-1) + 0.5) * scale  # (N, count, 1)
    src = torch.arange(width, device=device, dtype=torch.float64).view(
        1, 1, -1) - offset.view(-1, 1, 1).double()  # relative to the crop
    inside = (src >= 0) & (src < in_size.view(-1, 1, 1).double())
    w = _pil_filter((src + 0.5 - center) / filterscale, mode) * inside
    w = w / w.sum(-1, keepdim=True)
    one = float(1 << _PRECISION_BITS)
    w = torch.where(w < 0, (w * one - 0.5).ceil(), (w * one + 0.5).floor())
    resized = (in_size != out_size).view(-1, 1, 1)
    identity = (src == out_index.unsqueeze(-1)).double()
    return torch.where(resized, w / one, identity)


def pillow_resizes_height_first(in_h: int, in_w: int, out_h: int,
                                out_w: int) -> bool:
    """Whether the installed Pillow resizes ``in_h x in_w`` to
    ``out_h x out_w`` height first.

    Pillow resizes in two passes, each rounded to uint8, width first; from
    Pillow 13 (python-pillow/Pillow#9549) height first when the height
    shrinks by more than twice as many pixels as the width (rule checked
    against Pillow 13 on 394 random sizes where the order shows,
    tests/test_datasets/test_decode_on_device.py).
    """
    import PIL
    if int(PIL.__version__.split('.')[0]) < 13:
        return False
    if (in_h, in_w) == (out_h, out_w) or in_h == out_h or in_w == out_w:
        return False  # one pass or none
    return out_h < in_h and in_h - out_h > 2 * (in_w - out_w)


def run_plans_batched(images: Sequence[torch.Tensor],
                      plans: torch.Tensor,
                      max_elements: int = 2**28) -> torch.Tensor:
    """:func:`run_plans` for plans with Pillow resizes (modes 0, 1), as two
    batched matrix products per group of images.

    Each image's crop, resize, crop of the resized image and flip are
    folded into one weight matrix per axis (:func:`pil_weights`); the
    images, padded to a common size, are resized along one axis, rounded
    to uint8 as Pillow rounds its first pass, then along the other, in
    Pillow's order (:func:`pillow_resizes_height_first`). The products
    run in float32 on GPUs (TF32 off) and float64 on the CPU; they equal
    Pillow's uint8 resize up to the rounding of sums within float32's
    precision of a half level. Images are padded in groups of similar
    size of at most ``max_elements`` padded values each (1 GiB of float32
    by default), so that one large photograph does not pad a whole batch.

    Returns:
        uint8 ``(N, 3, h1, w1)`` RGB.
    """
    rows = plans.tolist()
    modes = {r[6] for r in rows if (r[4], r[5]) != (r[2], r[3])}
    if not modes <= set(_PIL_SUPPORT) or len(modes) > 1:
        return run_plans(images, plans)
    h1, w1 = _check_plans(images, rows)
    mode = modes.pop() if modes else 0
    device = images[0].device
    out = torch.empty((len(rows), 3, h1, w1), dtype=torch.uint8,
                      device=device)
    order = sorted(range(len(images)),
                   key=lambda i: -images[i].shape[1] * images[i].shape[2])
    group, height, width = [], 0, 0
    for i in order + [None]:
        if i is not None:
            h = max(height, images[i].shape[1])
            w = max(width, images[i].shape[2])
            if not group or (len(group) + 1) * 3 * h * w <= max_elements:
                group, height, width = group + [i], h, w
                continue
        idx = torch.tensor(group, device=device)
        out[idx] = _resize_group([images[j] for j in group],
                                 plans[group].to(device),
                                 [rows[j] for j in group], mode, h1, w1,
                                 height, width)
        if i is not None:
            group, height, width = [i], images[i].shape[1], images[i].shape[2]
    return out


def _resize_group(images, p, rows, mode, h1, w1, height, width):
    """:func:`run_plans_batched` for one group padded to
    ``height x width``."""
    device = images[0].device
    dtype = torch.float32 if device.type == 'cuda' else torch.float64
    batch = torch.zeros((len(images), 3, height, width), dtype=dtype,
                        device=device)
    for i, img in enumerate(images):
        batch[i, :, :img.shape[1], :img.shape[2]] = img
    no_flip = torch.zeros_like(p[:, 0])
    wx = pil_weights(p[:, 3], p[:, 5], p[:, 1], p[:, 8], w1, p[:, 11],
                     mode, width).to(dtype)
    wy = pil_weights(p[:, 2], p[:, 4], p[:, 0], p[:, 7], h1, no_flip, mode,
                     height).to(dtype)
    height_first = torch.tensor(
        [pillow_resizes_height_first(*r[2:6]) for r in rows], device=device)
    out = torch.empty((len(rows), 3, h1, w1), dtype=torch.uint8,
                      device=device)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('highest')  # no TF32 here
    try:
        for first in (False, True):
            idx = (height_first == first).nonzero()[:, 0]
            if len(idx) == 0:
                continue
            x, y = wx[idx].transpose(1, 2).unsqueeze(1), wy[idx].unsqueeze(1)
            # Pillow adds half a unit and truncates each pass's sums:
            # round half up, then clip to uint8
            if first:
                tmp = (torch.matmul(y, batch[idx]) + 0.5).floor_().clamp_(
                    0, 255)
                res = torch.matmul(tmp, x)
            else:
                tmp = (torch.matmul(batch[idx], x) + 0.5).floor_().clamp_(
                    0, 255)
                res = torch.matmul(y, tmp)
            out[idx] = (res + 0.5).floor_().clamp_(0, 255).to(torch.uint8)
    finally:
        torch.set_float32_matmul_precision(precision)
    return out


def decode_batch(encoded: dict,
                 device: torch.device,
                 names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Decode and transform the files of a ``stacked_collate`` ``encoded``
    entry on ``device``.

    Returns:
        uint8 ``(n, 3, h, w)`` RGB images, in the order of
        ``encoded['positions']``.
    """
    data, offsets = encoded['data'], encoded['offsets'].tolist()
    buffers = [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    images = decode_files(buffers, device, names)
    return run_plans_batched(images, encoded['plans'])
