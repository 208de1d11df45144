from .decode_on_device import (PLAN_FIELDS, RESIZE_MODES, DecodeOnDevice,
                               plan_geometry)
from .jpeg_header import JPEGHeader, jpeg_header

__all__ = [
    'DecodeOnDevice', 'JPEGHeader', 'PLAN_FIELDS', 'RESIZE_MODES',
    'jpeg_header', 'plan_geometry'
]
