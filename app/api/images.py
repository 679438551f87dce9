"""Bytes of one uploaded image → the model's input, for every endpoint that takes images."""

from __future__ import annotations

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.images import decode_opened, open_upload
from app.model import ServedModel

# Up to this many declared pixels decoding takes less time than a hop to the thread pool;
# larger images are decoded off the event loop so that they never stall other requests.
INLINE_DECODE_PIXELS = 128 * 128


async def decode_image(
    data: bytes, name: str, settings: Settings, model: ServedModel
) -> np.ndarray:
    """Check the header (format, declared size), then decode to ``(h, w, 3)`` uint8 at the
    model's input size; raises the ``app.images`` domain errors."""
    img = open_upload(data, settings.max_image_pixels, name)  # header only
    width, height = img.size
    if width * height <= INLINE_DECODE_PIXELS:
        return decode_opened(img, model.input_size, name)
    return await run_in_threadpool(decode_opened, img, model.input_size, name)


def pixel_array(value: object) -> np.ndarray | None:
    """JSON numbers (nested lists) as an array of pixels 0-255, or ``None`` when they are not
    that: not integers (JSON Schema counts ``126.0`` as one; ``0.5``, booleans and strings are
    not), ragged, or out of range."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            return None
    elif array.dtype.kind not in "iu":
        return None
    if array.size and (array.min() < 0 or array.max() > 255):
        return None
    return array.astype(np.uint8)
