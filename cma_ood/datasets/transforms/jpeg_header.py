"""What a JPEG file's header says about it, without decoding it.

:func:`jpeg_header` reads the markers before the first scan: the frame
size, the number of colour components and the coding process (from the
start-of-frame marker), the colour transform of an Adobe APP14 marker and
the EXIF orientation of an APP1 marker.
:class:`~cma_ood.datasets.DecodeOnDevice` uses it to send to the GPU only
the files that nvJPEG decodes as OpenCV does on the CPU, up to their IDCT
and chroma upsampling (upright 8-bit YCbCr).
"""
import struct
from typing import NamedTuple, Optional

# start-of-frame markers: baseline, extended sequential, progressive (all
# Huffman-coded); the others (lossless, hierarchical, arithmetic) are rare
# and are left to the CPU decoder
_HUFFMAN_SOF = {0xC0: 'baseline', 0xC1: 'extended', 0xC2: 'progressive'}
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length field


class JPEGHeader(NamedTuple):
    """The header of a JPEG file.

    Attributes:
        height, width (int): the frame size in pixels.
        components (int): 1 (greyscale), 3 (YCbCr or RGB) or 4 (CMYK/YCCK).
        precision (int): bits per sample (8 for almost every file).
        process (str): ``'baseline'``, ``'extended'``, ``'progressive'`` or
            ``'other'`` (lossless, hierarchical or arithmetic coding).
        adobe_transform (int or None): the colour transform flag of an
            Adobe APP14 marker (0: none, 1: YCbCr, 2: YCCK).
        rgb_component_ids (bool): the three components are labelled 'R',
            'G', 'B' (libjpeg then decodes them as RGB, not YCbCr).
        orientation (int): the EXIF orientation (1: upright, the default).
        chroma_subsampled (bool): the components have different sampling
            factors (4:2:0, 4:2:2, ...: almost every photograph). Decoders
            differ most on these: libjpeg-turbo upsamples the chroma
            planes with a triangle filter, nvJPEG does not.
    """
    height: int
    width: int
    components: int
    precision: int
    process: str
    adobe_transform: Optional[int]
    rgb_component_ids: bool
    orientation: int
    chroma_subsampled: bool = False

    @property
    def is_plain_ycbcr(self) -> bool:
        """An upright 8-bit Huffman-coded YCbCr JPEG: the files that nvJPEG
        and OpenCV decode the same way (up to their IDCT and chroma
        upsampling)."""
        return (self.components == 3 and self.precision == 8
                and self.process != 'other' and self.height > 0
                and self.width > 0 and self.adobe_transform in (None, 1)
                and not self.rgb_component_ids and self.orientation == 1)


def _exif_orientation(payload: bytes) -> int:
    """The orientation tag (0x0112) of an APP1 EXIF payload, 1 if absent."""
    if not payload.startswith(b'Exif\0\0') or len(payload) < 14:
        return 1
    tiff = payload[6:]
    order = {b'II': '<', b'MM': '>'}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (ifd, ) = struct.unpack_from(order + 'I', tiff, 4)
        (count, ) = struct.unpack_from(order + 'H', tiff, ifd)
        for i in range(count):
            tag, kind, _, value = struct.unpack_from(order + 'HHI4s', tiff,
                                                     ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:  # SHORT, stored in place
                return struct.unpack_from(order + 'H', value)[0]
    except struct.error:
        return 1
    return 1


def jpeg_header(data: bytes) -> Optional[JPEGHeader]:
    """Parse the header of JPEG ``data``; ``None`` if it is not a JPEG or
    its header is malformed.

    Only the marker segments before the first start-of-scan are read (a
    few hundred bytes to a few kilobytes), never the entropy-coded data.
    """
    if not data.startswith(b'\xff\xd8'):
        return None
    pos, end = 2, len(data)
    frame = None
    adobe, orientation = None, 1
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan
            break
        (length, ) = struct.unpack_from('>H', data, pos + 2)
        if length < 2 or pos + 2 + length > end:
            return None
        payload = data[pos + 4:pos + 2 + length]
        if marker in _HUFFMAN_SOF or marker in _OTHER_SOF:
            if len(payload) < 6:
                return None
            precision, height, width, comps = struct.unpack_from(
                '>BHHB', payload)
            ids = payload[6:6 + 3 * comps:3]
            factors = set(payload[7:7 + 3 * comps:3])
            frame = (height, width, comps, precision,
                     _HUFFMAN_SOF.get(marker, 'other'), ids == b'RGB',
                     len(factors) > 1)
        elif marker == 0xEE and payload.startswith(b'Adobe') \
                and len(payload) >= 12:
            adobe = payload[11]
        elif marker == 0xE1:
            orientation = _exif_orientation(payload)
        pos += 2 + length
    if frame is None:
        return None
    height, width, comps, precision, process, rgb_ids, subsampled = frame
    return JPEGHeader(height, width, comps, precision, process, adobe,
                      rgb_ids, orientation, subsampled)
