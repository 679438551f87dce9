"""API keys: off unless ``CIFAR10_API_KEYS`` is set; then the inference endpoints and the model
card (``/model``, ``/model/card``) need one.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and compared with
every configured key in constant time (no early exit on the first match or mismatch). Health,
readiness, metrics, the protocols' metadata and the docs stay open, as orchestrators, scrapers
and protocol clients need them.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.errors import APIError

# Routes with one of these OpenAPI tags need a key when keys are configured.
PROTECTED_TAGS = frozenset({"prediction", "inference", "model"})
SECURITY_SCHEMES = {
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def parse_keys(value: str | None) -> list[str]:
    """``"k1,k2"`` → ``["k1", "k2"]`` (blank entries dropped)."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


class APIKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, request: Request) -> None:
        """Return if the request carries a configured key (or none are configured); else 401."""
        if not self._keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        supplied = [
            given.strip().encode("latin-1")
            for given in (
                request.headers.get("x-api-key"),
                token if scheme.lower() == "bearer" else None,
            )
            if given and given.strip()
        ]
        if not supplied:
            raise APIError(
                401,
                "unauthorized",
                NO_KEY,
                {"WWW-Authenticate": "Bearer"},
            )
        matched = False  # either header with a valid key passes; every comparison is made
        for given in supplied:
            for key in self._keys:
                matched |= hmac.compare_digest(key, given)
        if not matched:
            raise APIError(
                401,
                "unauthorized",
                "the API key is not valid",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )


NO_KEY = "this endpoint needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


def add_security_to_openapi(schema: dict) -> dict:
    """Declare both key schemes and require one on every protected operation, so that
    Swagger UI's Authorize button sends the key with "Try it out"."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        error = "ProtocolError" if path.startswith(("/v1", "/v2")) else "ErrorResponse"
        unauthorized = {
            "description": "No API key, or not a valid one.",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}},
            "headers": {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}},
                "X-Request-ID": {"description": "The request's id.", "schema": {"type": "string"}},
            },
        }
        for operation in operations.values():
            if PROTECTED_TAGS & set(operation.get("tags", [])):
                operation["security"] = [{"BearerAuth": []}, {"APIKeyHeader": []}]
                operation.setdefault("responses", {})["401"] = unauthorized
    return schema
