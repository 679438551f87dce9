"""What the client-protocol routers (Open Inference Protocol, TF Serving) share: their error
shape, ``{"error": "message"}``, resolving the model a request names, and the pieces of their
request-body schemas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from app.api.deps import Serving, serving_state
from app.errors import APIError, api_error_for
from app.model import ServedModel

# CIFAR-10's input, which the route declarations describe; app.api.openapi fills in the served
# model's own size once one is loaded
DEFAULT_INPUT_SIZE = (32, 32)
IMAGE_BASE64 = {
    "type": "string",
    "format": "x-image-base64",
    "description": "An encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF), base64.",
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


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def protocol_errors(handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run ``handler``; any API or domain error becomes the protocol's ``{"error": ...}``."""
    try:
        return await handler()
    except APIError as exc:
        return _error(exc.status_code, exc.message, exc.headers)
    except Exception as exc:
        mapped = api_error_for(exc)
        if mapped is None:
            raise
        return _error(mapped.status_code, mapped.message, mapped.headers)


def protocol_serving(request: Request, name: str, version: str | None) -> Serving:
    """The serving state for an inference call on model ``name`` (and ``version``)."""
    serving = serving_state(request)
    served_model(request, name, version)
    return serving


def served_model(request: Request, name: str, version: str | None) -> ServedModel:
    model = getattr(request.app.state, "model", None)
    if model is None:
        raise APIError(503, "model_not_loaded", "the model is not loaded yet", {"Retry-After": "5"})
    if name != model.name or (version is not None and version != str(model.version)):
        wanted = name + (f" version {version}" if version else "")
        raise APIError(
            404,
            "not_found",
            f"model {wanted} is not served here ({model.name} version {model.version} is)",
        )
    return model
