"""What the client-protocol routers (Open Inference Protocol, TF Serving) share: the pieces of
their request-body schemas. (Their error shape, ``{"error": "message"}``, is chosen by path in
``app.errors``; their way to the model is ``app.api.inference``.)"""

from __future__ import annotations

# CIFAR-10's input, which the route declarations describe; app.api.openapi fills in the served
# model's own size once one is loaded
DEFAULT_INPUT_SIZE = (32, 32)
IMAGE_BASE64 = {
    "type": "string",
    "format": "x-image-base64",
    "minLength": 4,
    "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    "description": "An encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF), base64 (RFC 4648, padded).",
}


def pixels_schema(h: int, w: int) -> dict:
    """A ``[h, w, 3]`` nested array of integers 0-255."""
    channel = {"type": "integer", "minimum": 0, "maximum": 255}
    pixel = {"type": "array", "items": channel, "minItems": 3, "maxItems": 3}
    row = {"type": "array", "items": pixel, "minItems": w, "maxItems": w}
    return {"type": "array", "items": row, "minItems": h, "maxItems": h}


def json_request_body(schema: dict) -> dict:
    """``openapi_extra`` for a route whose body is JSON of ``schema``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
