"""Decode an uploaded image into the model's uint8 RGB input.

Accepts what Pillow decodes among JPEG, PNG, WebP, GIF (first frame), BMP and TIFF; applies
EXIF orientation; converts any mode (L, P, RGBA, CMYK, 16-bit) to RGB, compositing
transparency on white; resizes with antialiasing. Dimensions are checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io

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


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        img = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


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
            f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
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
        rgb = _to_rgb(img)
        if rgb.size != (width_out, height_out):
            rgb = rgb.resize((width_out, height_out), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"{filename or 'upload'}: corrupt or truncated image ({exc})"
        ) from None
