"""The inference core: what every protocol's endpoint does between its codec and the model.

The routers (``/predict``, Open Inference Protocol v2, TF Serving REST) only translate their
request into a list of images and the result into their answer. ``InferenceCore`` owns the rest,
once for all of them (KServe's ``DataPlane`` is the model): API key and readiness
(``for_request``), the images-per-request and bytes-per-image limits, decoding encoded images
and checking pixel arrays, the micro-batcher, and the prediction metrics. Every failure is a
domain error that ``app.errors`` maps to one status, which each protocol answers in its own
shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.api.decoding import Body, InvalidInputError, parse_body
from app.batching import MicroBatcher
from app.config import Settings
from app.errors import APIError
from app.images import decode_opened, open_upload
from app.limits import PixelBudget, RouteCaps, read_body, readable_bytes
from app.metrics import Metrics
from app.model import ServedModel
from app.png import decode_plain_png

# Up to this many declared pixels decoding takes less time than a hop to the thread pool;
# larger images are decoded off the event loop so that they never stall other requests.
INLINE_DECODE_PIXELS = 128 * 128
# Files larger than this are decoded off the event loop whatever their pixels: a 32x32 PNG can
# carry megabytes of chunks, and checking a 10 MiB file's CRCs alone took 6.5 ms.
INLINE_DECODE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image file's bytes as the client sent them (PNG, JPEG, ...), and what to call it in
    error messages."""

    data: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Classified:
    """Probabilities ``[n, classes]`` for the request's images, in order, with the model
    version that computed them (a reload may swap versions between requests) and the top-1
    labels."""

    probabilities: np.ndarray
    model: ServedModel
    labels: list[str]


def not_loaded() -> APIError:
    return APIError(503, "model_not_loaded", "the model is not loaded yet", {"Retry-After": "5"})


def served_model(
    request: Request, name: str | None = None, version: str | None = None
) -> ServedModel:
    """The loaded model (503 while none is), which must be the one a protocol path names."""
    model = request.app.state.model
    if model is None:
        raise not_loaded()
    if name is not None and (
        name != model.name or (version is not None and version != str(model.version))
    ):
        wanted = name + (f" version {version}" if version else "")
        raise APIError(
            404,
            "not_found",
            f"model {wanted} is not served here ({model.name} version {model.version} is)",
        )
    return model


class InferenceCore:
    """One request's way to the model: ``classify`` images, raw or encoded."""

    __slots__ = ("settings", "model", "batcher", "metrics", "pinned", "pixels_budget", "caps")

    def __init__(
        self,
        settings: Settings,
        model: ServedModel,
        batcher: MicroBatcher,
        metrics: Metrics,
        pinned: bool = False,
        pixels_budget: PixelBudget | None = None,
        caps: RouteCaps | None = None,
    ) -> None:
        self.settings, self.model, self.batcher, self.metrics = settings, model, batcher, metrics
        self.pinned = pinned  # the request named the version: only that version may answer
        self.pixels_budget = pixels_budget  # large decodes wait for their turn in it
        self.caps = caps or RouteCaps.from_settings(settings)  # each route's body cap

    @classmethod
    def for_request(
        cls, request: Request, name: str | None = None, version: str | None = None
    ) -> InferenceCore:
        """The core for an inference request: checks the API key (where keys are configured)
        first, then that a model is loaded and, for protocol paths, that it is the named one."""
        state = request.app.state
        state.api_keys.check(request)
        model = served_model(request, name, version)
        if state.batcher is None:
            raise not_loaded()
        return cls(
            state.settings,
            model,
            state.batcher,
            state.metrics,
            version is not None,
            state.pixels_budget,
            state.route_caps,
        )

    async def read_body(self, request: Request, cap: int) -> bytes:
        """The body, at most ``cap`` bytes (``app.limits.read_body``)."""
        return await read_body(request, cap)

    async def parse_json(self, body: bytes, model: type[Body]) -> Body:
        """A protocol's JSON body as ``model``. A body of numbers parses to eight bytes or more
        per two bytes of text, so one with more values than twice what ``max_files`` images
        hold is refused (413) before parsing (twice: a request a few images over the limit
        still hears how many it sent); a large body is parsed off the event loop."""
        h, w = self.model.input_size
        most = 2 * self.settings.max_files * h * w * 3 + 1024
        if len(body) <= INLINE_DECODE_BYTES:
            return _parse_bounded(body, model, most)
        return await run_in_threadpool(_parse_bounded, body, model, most)

    def check_count(self, count: int) -> None:
        """1 to ``max_files`` images per request."""
        if count < 1:
            raise InvalidInputError("the request holds no image")
        if count > self.settings.max_files:
            raise APIError(
                413,
                "too_many_files",
                f"{count} images sent; the limit is {self.settings.max_files}",
            )

    def check_size(self, size: int, name: str) -> None:
        """At most ``max_upload_bytes`` per encoded image."""
        if size > self.settings.max_upload_bytes:
            raise APIError(
                413,
                "file_too_large",
                f"{name}: larger than the limit of "
                f"{readable_bytes(self.settings.max_upload_bytes)}",
            )

    async def decode(self, image: EncodedImage) -> np.ndarray:
        """Check the size and header (format, declared dimensions), then decode to
        ``(h, w, 3)`` uint8 at the model's input size. A plain PNG of that size (the common
        upload) takes ``app.png``'s fast path; everything else, and every error, Pillow's.
        A small file is decoded on the event loop (faster than a hop to a thread); a large
        file, or a large image, in the thread pool, so that it never stalls other requests."""
        self.check_size(len(image.data), image.name)
        if len(image.data) > INLINE_DECODE_BYTES:  # even checking its chunks' CRCs takes ms
            return await run_in_threadpool(self.decode_now, image)
        settings = self.settings
        plain = decode_plain_png(image.data, self.model.input_size, settings.max_image_pixels)
        if plain is not None:
            return plain
        img = open_upload(image.data, settings.max_image_pixels, image.name)  # header only
        width, height = img.size
        if width * height <= INLINE_DECODE_PIXELS:
            return decode_opened(img, self.model.input_size, image.name)
        return await run_in_threadpool(self.decode_in_turn, img, image.name)

    def decode_now(self, image: EncodedImage) -> np.ndarray:
        """``decode``'s work, all of it in the calling thread."""
        settings = self.settings
        plain = decode_plain_png(image.data, self.model.input_size, settings.max_image_pixels)
        if plain is not None:
            return plain
        img = open_upload(image.data, settings.max_image_pixels, image.name)
        return self.decode_in_turn(img, image.name)

    def decode_in_turn(self, img: Image.Image, name: str) -> np.ndarray:
        """Decode an opened image once its pixels fit the pixel budget (in a worker thread)."""
        if self.pixels_budget is None:
            return decode_opened(img, self.model.input_size, name)
        width, height = img.size
        with self.pixels_budget.hold(width * height):
            return decode_opened(img, self.model.input_size, name)

    def pixels(self, array: np.ndarray, name: str) -> np.ndarray:
        """A uint8 pixel array, which must be one image of the model's input shape."""
        h, w = self.model.input_size
        if array.shape != (h, w, 3):
            raise InvalidInputError(
                f"{name}: must be a [{h}, {w}, 3] array of integers 0-255, "
                f"got shape {list(array.shape)}"
            )
        return array

    async def classify(self, images: Sequence[EncodedImage | np.ndarray]) -> Classified:
        """Probabilities for ``images``: encoded files, or uint8 ``(h, w, 3)`` pixel arrays
        already of the model's input size (``pixels`` checks them)."""
        self.check_count(len(images))
        arrays = [await self.decode(x) if isinstance(x, EncodedImage) else x for x in images]
        # one image, the common case: a view with a batch axis (np.stack costs ~5 us)
        batch = arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)
        return await self.classify_batch(batch)

    async def classify_batch(self, batch: np.ndarray) -> Classified:
        """Probabilities for a uint8 ``[n, h, w, 3]`` batch of the model's input size."""
        self.check_count(len(batch))
        probs, model = await self.batcher.submit_tagged(  # and the version that computed them
            batch,
            want=self.model if self.pinned else None,
            timeout=self.settings.request_timeout_s,
        )
        names = model.class_names
        labels = [names[i] for i in probs.argmax(axis=1).tolist()]
        for label in labels:
            self.metrics.count_prediction(label)
        return Classified(probs, model, labels)


def _parse_bounded(body: bytes, model: type[Body], most_values: int) -> Body:
    if body.count(b",") >= most_values:
        raise APIError(
            413,
            "payload_too_large",
            f"the body holds more than {most_values} values, more than the request's images "
            "can take",
        )
    return parse_body(body, model)
