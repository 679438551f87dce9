"""An example of each error the OpenAPI document lists, in the words the server uses on that
path (Swagger UI and ReDoc show them; ``tests/app/test_openapi_document.py`` and the tests that
provoke the rarer statuses compare each with a real answer).

Paths differ in how they name what went wrong: ``/predict`` names the uploaded file, the Open
Inference Protocol the ``image`` tensor's element, TF Serving REST the instance; the model-card
paths and the protocols' metadata paths have their own 404s. The messages carry the served
model's name and version and the configured limits, as the server's answers do.
"""

from __future__ import annotations

from app.auth import NO_KEY
from app.config import Settings
from app.images import ACCEPTED_MEDIA_TYPES
from app.limits import MIN_BODY_BYTES_PER_S, readable_bytes, too_slow
from app.safety_net import internal_error

# A request id as the server makes them (16 hex digits), for the 500's example.
EXAMPLE_REQUEST_ID = "5f2b9c1d7a3e4b60"
# The name a wrong protocol path names, in the 404's example.
OTHER_MODEL = "resnet"


def path_kind(path: str) -> str:
    """Which family of messages a document path's errors come from."""
    if path == "/predict":
        return "predict"
    if path.endswith("/infer"):
        return "open_inference"
    if path.endswith(":predict"):
        return "tf_serving"
    if path.startswith(("/v1/models/", "/v2/models/")):
        return "model_by_name"
    if path in ("/model/card", "/model/files/{name}"):
        return path
    return "other"


def examples(name: str, version: str, settings: Settings) -> dict[tuple[str, str], tuple]:
    """``(path kind, status) -> (code, message)`` for the served model ``name`` ``version``;
    a kind without its own row for a status takes that of ``"versioned"`` (paths naming a
    version), then that of ``"*"``."""
    upload = readable_bytes(settings.max_upload_bytes)
    svg = f"SVG images are not supported; send {ACCEPTED_MEDIA_TYPES}"
    served = f"({name} version {version} is)"
    rows: dict[tuple[str, str], tuple] = {
        ("*", "401"): ("unauthorized", NO_KEY),
        ("*", "408"): _error(too_slow(MIN_BODY_BYTES_PER_S, settings.body_grace_s)),
        ("*", "500"): ("internal_error", internal_error(EXAMPLE_REQUEST_ID)),
        ("*", "503"): ("model_not_loaded", "the model is not loaded yet"),
        ("*", "504"): (
            "inference_timeout",
            f"the model did not compute the request within {settings.request_timeout_s:g} s; "
            "retry later",
        ),
        ("*", "404"): ("not_found", f"model {OTHER_MODEL} is not served here {served}"),
        ("versioned", "404"): (
            "not_found",
            f"model {OTHER_MODEL} version {version} is not served here {served}",
        ),
        ("*", "422"): ("invalid_request", "query.format: Input should be 'markdown' or 'html'"),
        ("/model/card", "404"): ("not_found", f"version {version} has no README.md"),
        ("/model/files/{name}", "404"): (
            "not_found",
            f"the card of version {version} links to no file 'nope.png'",
        ),
        ("predict", "422"): (
            "missing_file",
            "send an image in the multipart field 'file' or 'files'",
        ),
    }
    # what each path calls the bad image: the upload's file name (one per example), the
    # protocols' tensor element or instance
    items = {
        "predict": {"400": "photo.jpg", "413": "big.png", "415": "logo.svg"},
        "open_inference": dict.fromkeys(("400", "413", "415"), "image 0"),
        "tf_serving": dict.fromkeys(("400", "413", "415"), "instance 0"),
    }
    for kind, item in items.items():
        rows[(kind, "400")] = ("invalid_image", f"{item['400']}: not a recognisable image")
        rows[(kind, "413")] = (
            "file_too_large",
            f"{item['413']}: larger than the limit of {upload}",
        )
        rows[(kind, "415")] = ("unsupported_image_type", f"{item['415']}: {svg}")
        rows[(kind, "503")] = (
            "overloaded",
            f"server busy: {settings.queue_limit} images already waiting; retry shortly",
        )
    return rows


def example(path: str, status: str, protocol: bool, rows: dict[tuple[str, str], tuple]) -> dict:
    """The error body of ``path``'s example for ``status``, in its protocol's shape."""
    kind = path_kind(path)
    versioned = "{version}" in path and rows.get(("versioned", status))
    code, message = rows.get((kind, status)) or versioned or rows[("*", status)]
    return {"error": message} if protocol else {"error": {"code": code, "message": message}}


def _error(error) -> tuple[str, str]:
    return error.code, error.message
