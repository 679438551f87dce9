"""A fast path for the common upload: a plain PNG of exactly the model's input size.

Pillow spends about 45 us on a 32x32 PNG, most of it in Python (the plugin reads chunk by
chunk); libspng (``pyspng``) decodes the same file in about 15 us. ``decode_plain_png`` takes
only what both decoders are known to read alike: an 8-bit RGB or gray, non-interlaced PNG of
exactly ``size``, whose chunks are all ones that change no pixel as this service decodes
(``PLAIN_CHUNKS``) and all carry a correct CRC. It checks the chunks itself because libspng, as
``pyspng`` configures it, ignores CRC errors that Pillow refuses. Anything else, and any file
libspng refuses, returns ``None`` and takes the general path in ``app.images`` (Pillow), which
decides and words every error: this path never raises and never changes an answer.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pyspng

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that carry no pixels and that the general path ignores for 8-bit RGB and gray: colour
# space hints (Pillow does not apply them), resolution, time, background, significant bits.
# Text is read by Pillow for EXIF ("Raw profile type exif", then orientation applies), so a
# tEXt chunk is plain only with another keyword; compressed text and eXIf never are.
PLAIN_CHUNKS = frozenset(
    {b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"sBIT", b"tIME", b"bKGD"}
)
EXIF_TEXT_KEYWORD = b"Raw profile type"
GRAY, RGB = 0, 2  # IHDR colour types
_IHDR = struct.Struct(">I4sIIBBBBB")  # length, type, width, height, depth, colour, ..., interlace
_UINT32 = struct.Struct(">I")


def decode_plain_png(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray | None:
    """``data`` as ``(height, width, 3)`` uint8 RGB if it is a plain PNG of exactly ``size``
    (see the module's docstring) and ``size`` is within ``max_pixels``, else ``None``."""
    if len(data) < 45 or not data.startswith(SIGNATURE):
        return None
    length, kind, width, height, depth, colour, _, _, interlace = _IHDR.unpack_from(data, 8)
    if (
        length != 13
        or kind != b"IHDR"
        or (height, width) != size
        or height * width > max_pixels
        or depth != 8
        or colour not in (GRAY, RGB)
        or interlace != 0
        or not _chunks_are_plain(data)
    ):
        return None
    try:
        return pyspng.load(data, "RGB")  # gray is replicated to three channels, as Pillow does
    except (RuntimeError, ValueError):
        return None


def _chunks_are_plain(data: bytes) -> bool:
    """Every chunk from IHDR to IEND is whole, has its CRC and is IHDR or in ``PLAIN_CHUNKS``."""
    view = memoryview(data)
    position, end = 8, len(data)
    while position + 12 <= end:
        (length,) = _UINT32.unpack_from(data, position)
        kind = data[position + 4 : position + 8]
        crc_at = position + 8 + length
        if crc_at + 4 > end:
            return False
        if position > 8 and kind not in PLAIN_CHUNKS:
            if kind != b"tEXt" or data.startswith(EXIF_TEXT_KEYWORD, position + 8, crc_at):
                return False
        if zlib.crc32(view[position + 4 : crc_at]) != _UINT32.unpack_from(data, crc_at)[0]:
            return False
        if kind == b"IEND":
            return True
        position = crc_at + 4
    return False
