"""Every error the API returns is JSON in the shape of the protocol the path belongs to:
``{"error": {"code", "message"}}`` for this service's own endpoints, ``{"error": "message"}``
under ``/v1/`` (TF Serving REST) and ``/v2/`` (Open Inference Protocol), as their clients expect.

The domain errors that requests can cause (a bad image, a full queue, a server that is
stopping) are raised by the modules that detect them and mapped to an HTTP status, a stable
error code and headers here, in ``_domain_errors()``, the one table of that mapping. What no
handler maps is answered by ``app.safety_net`` (a JSON 500, logged with the request id).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope


class APIError(HTTPException):
    """An error a client caused (or an overload it should retry), with a stable code."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message


# Paths whose protocol answers errors as {"error": "message"}.
PROTOCOL_PREFIXES = ("/v1", "/v2")


def route_path(scope: Scope) -> str:
    """The path that says which protocol a request speaks: its route's template once routing
    matched one, else its path within the app (without the ``root_path`` a proxy mounts it
    under)."""
    template = getattr(scope.get("route"), "path", None)
    if template:
        return template
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def error_body(code: str, message: str, scope: Scope) -> dict:
    """The error in the shape of the protocol the request belongs to."""
    if route_path(scope).startswith(PROTOCOL_PREFIXES):
        return {"error": message}
    return {"error": {"code": code, "message": message}}


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, request.scope), status_code=status, headers=headers
    )


_DEFAULT_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or _DEFAULT_CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return error_response(request, 422, "invalid_request", "; ".join(problems))


@dataclass(frozen=True)
class ErrorMapping:
    status: int
    code: str
    headers: dict | None = None


def _domain_errors() -> dict[type[Exception], ErrorMapping]:
    from app.api.decoding import InvalidInputError
    from app.batching import (
        BatcherClosedError,
        InferenceFailedError,
        InferenceTimeoutError,
        ModelFailedError,
        QueueFullError,
        VersionReplacedError,
    )
    from app.images import (
        EmptyImageError,
        ImageTooLargeError,
        InvalidImageError,
        UnsupportedImageTypeError,
    )

    return {
        InvalidInputError: ErrorMapping(400, "invalid_input"),
        EmptyImageError: ErrorMapping(400, "empty_file"),
        InvalidImageError: ErrorMapping(400, "invalid_image"),
        UnsupportedImageTypeError: ErrorMapping(415, "unsupported_image_type"),
        ImageTooLargeError: ErrorMapping(413, "image_too_large"),
        QueueFullError: ErrorMapping(503, "overloaded", {"Retry-After": "1"}),
        # Retrying will not help a model that failed its warm-up: no Retry-After.
        ModelFailedError: ErrorMapping(503, "model_failed"),
        BatcherClosedError: ErrorMapping(503, "shutting_down", {"Retry-After": "5"}),
        VersionReplacedError: ErrorMapping(503, "version_replaced"),
        InferenceTimeoutError: ErrorMapping(504, "inference_timeout", {"Retry-After": "5"}),
        InferenceFailedError: ErrorMapping(500, "inference_failed"),
    }


def api_error_for(exc: Exception) -> APIError | None:
    """The ``APIError`` a domain error maps to (most specific class first), or ``None``."""
    for cls in type(exc).__mro__:
        mapping = _domain_errors().get(cls)
        if mapping is not None:
            return APIError(mapping.status, mapping.code, str(exc), mapping.headers)
    return None


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    error = api_error_for(exc)
    if error is None:  # registered only for mapped types, so this is a programming error
        raise exc
    return await _http_error(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for cls in _domain_errors():
        app.add_exception_handler(cls, _domain_error)
