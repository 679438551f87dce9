"""Decode an uploaded image into the model's uint8 RGB input.

Accepts what Pillow decodes among JPEG, PNG, WebP, GIF (first frame), BMP and TIFF; applies
EXIF orientation; converts any mode (L, P, RGBA, CMYK, 16-bit) to RGB, compositing
transparency on white; resizes with antialiasing. Dimensions are checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(Exception):
    """An upload that cannot become the model's input; ``app.errors`` maps each subclass to
    its HTTP status and error code."""


class EmptyImageError(ImageError):
    """Zero bytes."""


class InvalidImageError(ImageError):
    """Not an image, or corrupt or truncated."""


class UnsupportedImageTypeError(ImageError):
    """An image format outside ``ACCEPTED_FORMATS``."""


class ImageTooLargeError(ImageError):
    """Declared dimensions over the pixel limit (refused before decoding)."""


ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF"}
ACCEPTED_MEDIA_TYPES = ", ".join(
    ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"]
)


def _to_rgb_or_gray(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB (transparency composited on white), or 8-bit gray ("L") where it
    has no colour: gray is resized before it becomes RGB (the same pixels as resizing its three
    equal channels, a third of the memory). 16-bit and 32-bit integer images are scaled in
    integers, in place: a float64 copy of a 40-megapixel image would take 320 MB."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.array(img)  # uint16 or int32, writable
        scale = 257 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 1
        if values.dtype.kind == "i":
            np.maximum(values, 0, out=values)
        np.floor_divide(values, scale, out=values)
        np.minimum(values, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:  # on white, pasted through its own alpha: one RGB copy, no RGBA composite
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba)
        return rgb
    return img if img.mode in ("RGB", "L") else img.convert("RGB")


# Images in formats this server does not read, known by their first bytes where Pillow does not
# know them: answered as unsupported (415), as any other format outside the list, not as
# "not an image" (400).
_ISO_MEDIA_BRANDS = {
    **dict.fromkeys([b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm"], "HEIC"),
    **dict.fromkeys([b"mif1", b"msf1"], "HEIF"),
}
# An SVG document: an XML declaration, comments and a doctype at most, then the <svg> element.
_SVG = re.compile(
    rb"(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*"
    rb"(?:<!doctype svg[^>]*>\s*)?(?:<!--.*?-->\s*)*<svg[\s>/]",
    re.DOTALL,
)


def unsupported_format(data: bytes) -> str | None:
    """The name of an image format that Pillow cannot open here (SVG, HEIC/HEIF), or None."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if _SVG.match(head):
        return "SVG"
    if data[4:8] == b"ftyp":
        return _ISO_MEDIA_BRANDS.get(data[8:12])
    return None


def open_upload(data: bytes, max_pixels: int, filename: str | None = None) -> Image.Image:
    """Read one upload's header: the format must be accepted and the dimensions within
    ``max_pixels``. No pixel is decoded, so a decompression bomb costs nothing."""
    name = filename or "upload"
    if not data:
        raise EmptyImageError(f"{name}: the file is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: {exc}") from None
    except UnidentifiedImageError:
        if (other := unsupported_format(data)) is not None:
            raise UnsupportedImageTypeError(
                f"{name}: {other} images are not supported; send {ACCEPTED_MEDIA_TYPES}"
            ) from None
        raise InvalidImageError(f"{name}: not a recognisable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"{name}: unreadable image ({exc})") from None
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedImageTypeError(
            f"{name}: {img.format} images are not supported; send {ACCEPTED_MEDIA_TYPES}"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} ({max_pixels / 1e6:g} megapixels)"
        )
    return img


def decode_opened(
    img: Image.Image, size: tuple[int, int], filename: str | None = None
) -> np.ndarray:
    """An image from ``open_upload`` → ``(height, width, 3)`` uint8 RGB at ``size``."""
    height_out, width_out = size
    try:
        if img.format == "JPEG":
            img.draft("RGB", (width_out * 2, height_out * 2))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to turn
        pixels = _to_rgb_or_gray(img)
        if pixels.size != (width_out, height_out):
            pixels = pixels.resize((width_out, height_out), Image.Resampling.LANCZOS)
        return np.asarray(pixels if pixels.mode == "RGB" else pixels.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"{filename or 'upload'}: corrupt or truncated image ({exc})"
        ) from None
