"""Every JSON and base64 decoding step of the request bodies, in one place.

Whatever a client sends, these functions return a value or raise ``InvalidInputError`` (a
400 in every protocol): invalid UTF-8, bodies that are not JSON, ``NaN``/``Infinity`` and
numbers that overflow a double, nesting past ``orjson``'s 1,024 levels (never a
``RecursionError``), bodies of the wrong shape (a typed pydantic model says which), base64 that
is not ASCII, has bad padding or stray characters, and pixel values that are not integers
0-255 (integers beyond 64 bits arrive as floats and are refused there).
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError


class InvalidInputError(ValueError):
    """A request body that cannot be read as the protocol's input (``app.errors``: 400)."""


Body = TypeVar("Body", bound=BaseModel)


def parse_json(body: bytes) -> object:
    """``body`` as JSON (RFC 8259: no ``NaN``/``Infinity``; integers past 64 bits become floats)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the request is not valid JSON ({exc})") from None


def parse_body(body: bytes, model: type[Body]) -> Body:
    """``body`` as JSON validated against ``model``; the message names every problem."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidInputError("the request must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidInputError(describe_validation_error(exc)) from None


def refuse_nulls(value: object, keys) -> object:
    """A JSON object's ``keys`` (those the protocol defines) must not be ``null``: an optional
    key is left out, not null. The document says so, and a null guessed as absent would accept
    what the schema refuses; other keys are the protocol's to ignore, null or not. For a
    pydantic ``model_validator(mode="before")``."""
    if isinstance(value, dict):
        nulls = sorted(k for k, v in value.items() if v is None and k in keys)
        if nulls:
            raise ValueError(f"{', '.join(repr(k) for k in nulls)}: leave the key out, not null")
    return value


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """The first ``limit`` problems, each as ``where: what``."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"])
        problems.append(f"{where}: {err['msg']}" if where else err["msg"])
    more = exc.error_count() - limit
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def decode_base64(value: object, what: str) -> bytes:
    """A standard base64 string (RFC 4648, padded) → its bytes."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}: must be a base64 string, not {type(value).__name__}")
    if not value.isascii():
        raise InvalidInputError(f"{what}: base64 holds only ASCII characters")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{what}: is not base64 ({exc})") from None


def pixel_array(value: object, what: str) -> np.ndarray:
    """JSON numbers (nested lists) as a uint8 array of pixels 0-255: integers only (JSON
    Schema counts ``126.0`` as one; ``0.5``, booleans and strings are not), not ragged."""
    message = f"{what}: must be integers 0-255"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{message}, in a regular (not ragged) array") from None
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise InvalidInputError(message)
    elif array.dtype.kind not in "iu":
        raise InvalidInputError(message)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidInputError(message)
    return array.astype(np.uint8)
