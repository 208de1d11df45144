"""Detect image files that are unreadable, truncated or not images.

Depending on the version, OpenCV either decodes a truncated JPEG without an
error (4.x: the missing part comes out grey and the model is scored on a
broken image) or fails with mmcv's unspecific ``AssertionError: failed to
load image``. :func:`image_problem`
checks that JPEG and PNG data are complete (a JPEG ends its last scan with
an end-of-image marker, a PNG has its ``IEND`` chunk) before decoding; any
format is refused when the decoder fails or returns nothing.

:class:`CheckedLoadImageFromFile` is mmcv's ``LoadImageFromFile`` with these
checks and an error naming the file; ``OoDConcatDataset(skip_broken=True)``
uses :func:`image_file_problem` to leave such files out of an OoD benchmark
instead.
"""
from typing import Optional

import cv2
import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmpretrain.registry import TRANSFORMS

_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b'\xff\xd8', b'\xff\xda', b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_IEND = b'\x00\x00\x00\x00IEND'


class BrokenImageError(OSError):
    """An image file that cannot be read or decoded completely."""


def image_data_problem(data: bytes) -> Optional[str]:
    """Why ``data`` is not a complete JPEG/PNG file, or ``None``.

    Only the structure is checked (no decoding): a JPEG needs an
    end-of-image marker after its last start-of-scan marker (markers cannot
    occur inside JPEG's entropy-coded data), a PNG needs its ``IEND`` chunk.
    Other formats pass; :func:`image_problem` decodes them.
    """
    if not data:
        return 'the file is empty'
    if data.startswith(_JPEG_SOI):
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan < 0:
            return 'truncated JPEG (no image data)'
        if data.find(_JPEG_EOI, last_scan) < 0:
            return 'truncated JPEG (no end-of-image marker)'
    elif data.startswith(_PNG_SIGNATURE) and data.rfind(_PNG_IEND) < 0:
        return 'truncated PNG (no IEND chunk)'
    return None


def image_problem(data: bytes, fast: bool = False,
                  backend: Optional[str] = None) -> Optional[str]:
    """Why ``data`` is not a complete, decodable image, or ``None``.

    Args:
        data: the file's bytes.
        fast: decode at 1/8 resolution with OpenCV (a JPEG is still read to
            its end) instead of in full with ``backend``.
        backend: mmcv's decoding backend (``None``: mmcv's default).
    """
    problem = image_data_problem(data)
    if problem is not None:
        return problem
    try:
        if fast:
            img = cv2.imdecode(
                np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
        else:
            img = mmcv.imfrombytes(data, backend=backend)
    except Exception as err:  # decoders raise many types
        return f'not a decodable image ({type(err).__name__}: {err})'
    if img is None or getattr(img, 'size', 0) == 0:
        return 'not a decodable image'
    return None


def image_file_problem(path: str, backend_args: Optional[dict] = None,
                       fast: bool = True) -> Optional[str]:
    """Why the image file ``path`` is unusable, or ``None``."""
    try:
        data = fileio.get(path, backend_args=backend_args)
    except Exception as err:  # missing file, permissions, remote errors
        return f'cannot be read ({type(err).__name__}: {err})'
    return image_problem(data, fast=fast)


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments) that refuses truncated
    and non-image files with a :class:`BrokenImageError` naming the file,
    where mmcv either fails with an unspecific assertion or, for a
    truncated JPEG, returns a partly grey image. With ``ignore_empty=True``
    such files give ``None`` instead, as in mmcv.
    """

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        try:
            if self.file_client_args is not None:
                client = fileio.FileClient.infer_client(
                    self.file_client_args, filename)
                data = client.get(filename)
            else:
                data = fileio.get(filename, backend_args=self.backend_args)
        except Exception as err:
            problem = f'cannot be read ({type(err).__name__}: {err})'
            data = None
        else:
            problem = image_data_problem(data)
        img = None
        if problem is None:
            try:
                img = mmcv.imfrombytes(
                    data, flag=self.color_type,
                    backend=self.imdecode_backend)
            except Exception as err:
                problem = f'not a decodable image ({type(err).__name__}: ' \
                    f'{err})'
            else:
                if img is None:
                    problem = 'not a decodable image'
        if problem is not None:
            if self.ignore_empty:
                return None
            raise BrokenImageError(
                f'Broken image file {filename}: {problem}. Replace or '
                'delete it; OoD test sets can skip such files with '
                'OoDConcatDataset(skip_broken=True)')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results
