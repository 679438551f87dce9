"""The OpenAPI document: every status each operation can send, and what only the running
server knows.

``document_responses`` lists, for every operation, each status the server can answer it with
(``RESPONSES``; FastAPI documents only 200 and a 422 it would send for invalid parameters, which
these routes never send, since they read their own): its body in the shape of the protocol (the
service's ``{"error": {"code", "message"}}``, the protocols' ``{"error": "..."}``), and its
headers (``X-Request-ID`` on every answer, ``Retry-After`` where retrying helps). ``complete``
then adds what only the running server knows: an example of each error in the words the server
uses on that path, with the served model and the limits (``app.api.error_examples``), and what
makes a schema-valid request one the server accepts: the served model's name and version as the
only values of ``{name}`` and ``{version}``, and the configured limits (images per request).
Request bodies that carry images mark them with the media type ``image/*`` (multipart parts, raw
bodies) or the string format ``x-image-base64``: such a value must be an encoded image (JPEG,
PNG, WebP, GIF, BMP, TIFF), which a JSON schema cannot say by itself. Each protocol's body
schema is its router's (``infer_body``, ``predict_body``); here it gets the served model's input
size and the limits.
"""

from __future__ import annotations

import copy

from app.api.error_examples import example
from app.api.error_examples import examples as error_examples
from app.api.protocol_schemas import OK_BODIES
from app.api.routes.open_inference import HEADER_LENGTH, infer_body
from app.api.routes.tf_serving import predict_body
from app.config import Settings
from app.limits import readable_bytes
from app.model import ServedModel


def complete(schema: dict, model: ServedModel | None, settings: Settings) -> dict:
    """A copy of ``schema`` with the settings' defaults, and the served model's names, versions
    and the limits, filled in (those of the model not while none is loaded)."""
    schema = copy.deepcopy(schema)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] == "top_k":
                    parameter["schema"]["default"] = settings.default_top_k
    # (while no model is loaded, the examples name the folder the settings point at)
    name, version = (model.name, str(model.version)) if model else (settings.model_dir.name, "N")
    _add_examples(schema, error_examples(name, version, settings))
    if model is None:
        return schema
    h, w = model.input_size
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path" or not path.startswith(("/v1/", "/v2/")):
                    continue  # (the protocols' {name} and {version}; /model/files/{name} is a file)
                if parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": [model.name]}
                elif parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": [str(model.version)]}
            content = operation.get("requestBody", {}).get("content", {})
            json_body = content.get("application/json")
            if json_body is not None and path.endswith(":predict"):
                json_body["schema"] = predict_body(h, w, settings.max_files)
            elif json_body is not None and path.endswith("/infer"):
                json_body["schema"] = infer_body(h, w)
            form = content.get("multipart/form-data")
            if form is not None:
                files = form["schema"]["properties"]["files"]
                files["maxItems"] = max(settings.max_files - 1, 1)
            for body in content.values():  # the file limits' values, where words name them
                _state_limits(body.get("schema", {}), settings)
    return schema


def _state_limits(schema: dict, settings: Settings) -> None:
    """Each description that names the per-file limits gets their values."""
    for part in [schema, *schema.get("properties", {}).values()]:
        for node in (part, part.get("items", {})):
            text = node.get("description", "")
            if "CIFAR10_MAX_UPLOAD_BYTES, CIFAR10_MAX_IMAGE_PIXELS)" in text:
                node["description"] = text.replace(
                    "CIFAR10_MAX_UPLOAD_BYTES, CIFAR10_MAX_IMAGE_PIXELS)",
                    f"CIFAR10_MAX_UPLOAD_BYTES: {readable_bytes(settings.max_upload_bytes)}; "
                    f"CIFAR10_MAX_IMAGE_PIXELS: {settings.max_image_pixels:,} pixels)",
                )


# What each status means, for the service's own operations and the protocols'.
_MEANINGS = {
    "400": "The body is not what the operation reads: not an image, corrupt or truncated, "
    "malformed multipart, JSON that is not the protocol's shape, bad base64, pixels that are "
    "not integers 0-255.",
    "404": "No such model or version here (the protocols' paths name the served model).",
    "408": "The request body did not arrive in time (a grace, then at least 1 MiB/s).",
    "413": "A file, the body, the image dimensions or the number of images over its limit.",
    "415": "A file that is not an image, or an image format that is not read.",
    "422": "A bad query parameter; for /predict also: neither 'file' nor 'files' was sent (nor "
    "an image as the body), or text in 'file'.",
    "500": "An unexpected error; the message names the request id, under which the log has "
    "the traceback.",
    "503": "Not available now: the queue or the body budget is full, the model is loading or "
    "failed, the server is stopping, or (readiness) not ready. Retry after Retry-After where "
    "it is sent.",
    "504": "The images were not computed within the request timeout.",
}
_INFERENCE = ("400", "408", "413", "415", "500", "503", "504")
_PROTOCOL_INFERENCE = ("400", "404", "408", "413", "415", "500", "503", "504")
_MODEL_BY_NAME = ("404", "500", "503")
# Every operation's error statuses (method, path template), as the server can send them.
RESPONSES: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/predict"): (*_INFERENCE, "422"),
    ("post", "/v2/models/{name}/infer"): _PROTOCOL_INFERENCE,
    ("post", "/v2/models/{name}/versions/{version}/infer"): _PROTOCOL_INFERENCE,
    ("post", "/v1/models/{name}:predict"): _PROTOCOL_INFERENCE,
    ("post", "/v1/models/{name}/versions/{version}:predict"): _PROTOCOL_INFERENCE,
    ("get", "/health"): ("500", "503"),
    ("get", "/health/ready"): ("500", "503"),
    ("get", "/model"): ("500", "503"),
    ("get", "/model/card"): ("404", "422", "500", "503"),
    ("get", "/model/files/{name}"): ("404", "500", "503"),
    ("get", "/metrics"): ("500",),
    ("get", "/v2"): ("500",),
    ("get", "/v2/health/live"): ("500", "503"),
    ("get", "/v2/health/ready"): ("500", "503"),
    ("get", "/v2/models/{name}"): _MODEL_BY_NAME,
    ("get", "/v2/models/{name}/versions/{version}"): _MODEL_BY_NAME,
    ("get", "/v2/models/{name}/ready"): _MODEL_BY_NAME,
    ("get", "/v2/models/{name}/versions/{version}/ready"): _MODEL_BY_NAME,
    ("get", "/v1/models/{name}"): _MODEL_BY_NAME,
    ("get", "/v1/models/{name}/versions/{version}"): _MODEL_BY_NAME,
    ("get", "/v1/models/{name}/metadata"): _MODEL_BY_NAME,
    ("get", "/v1/models/{name}/versions/{version}/metadata"): _MODEL_BY_NAME,
}
PROTOCOL_ERROR = {
    "title": "ProtocolError",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong."}},
}
REQUEST_ID = {
    "description": "The request's id: the client's own (a short token) or a new one; the log "
    "names it.",
    "schema": {"type": "string"},
}
RETRY_AFTER = {
    "description": "Seconds to wait before retrying (absent where retrying will not help).",
    "schema": {"type": "integer"},
    "required": False,
}
BINARY_HEADER_LENGTH = {
    "description": "With application/octet-stream: the size of the JSON header in bytes.",
    "schema": {"type": "integer"},
    "required": False,
}
BINARY_ANSWER = {
    "schema": {"type": "string", "format": "binary"},
    "description": "The binary tensor extension (outputs asked with binary_data): a JSON "
    f"header of {HEADER_LENGTH} bytes, then the raw tensors.",
}


def document_responses(schema: dict) -> dict:
    """``schema`` with every operation's statuses, bodies and headers (see the module
    docstring); FastAPI's 422, never sent by these routes, removed where it is not listed."""
    schema = copy.deepcopy(schema)
    schema.setdefault("components", {}).setdefault("schemas", {})["ProtocolError"] = PROTOCOL_ERROR
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = RESPONSES.get((method, path))
            if statuses is None:
                continue
            responses = operation.setdefault("responses", {})
            if (method, path) in OK_BODIES:  # (first: a readiness 503 repeats the 200's body)
                ok = responses.setdefault("200", {}).setdefault("content", {})
                ok.setdefault("application/json", {})["schema"] = OK_BODIES[(method, path)]
            if "422" not in statuses:
                responses.pop("422", None)
            for status in statuses:
                entry = responses.setdefault(status, {})
                if _is_fastapi_validation(entry):  # this server answers 422 in its own shape
                    entry.pop("content")
                    entry.pop("description", None)
                entry.setdefault("description", _MEANINGS[status])
                entry.setdefault("content", _error_content(path, status, responses))
                if status in ("503", "504"):
                    entry.setdefault("headers", {})["Retry-After"] = RETRY_AFTER
            for entry in responses.values():
                entry.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
            if method == "post" and path.endswith("/infer"):
                answer = responses["200"]
                answer.setdefault("content", {})["application/octet-stream"] = BINARY_ANSWER
                answer["headers"][HEADER_LENGTH] = BINARY_HEADER_LENGTH
    return schema


def _error_content(path: str, status: str, responses: dict) -> dict:
    """An error answer's body: a readiness or liveness check answers 503 with its own body
    (the 200's), every other error in the shape of the path's protocol."""
    checks = ("/health", "/health/ready", "/v2/health/live", "/v2/health/ready")
    if status == "503" and (path in checks or path.endswith("/ready")):
        return copy.deepcopy(responses.get("200", {}).get("content", {}))
    error = "ProtocolError" if path.startswith(("/v1", "/v2")) else "ErrorResponse"
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}}


def _is_fastapi_validation(entry: dict) -> bool:
    body = entry.get("content", {}).get("application/json", {})
    return body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError")


def _add_examples(schema: dict, rows: dict) -> None:
    """An example in each error's JSON body, where the body is one of the two error shapes
    (whether the route declared it or ``_error_content`` did)."""
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for status, entry in operation.get("responses", {}).items():
                body = entry.get("content", {}).get("application/json")
                ref = (body or {}).get("schema", {}).get("$ref", "")
                if body is None or not ref.endswith(("/ErrorResponse", "/ProtocolError")):
                    continue
                body["example"] = example(path, status, ref.endswith("/ProtocolError"), rows)
