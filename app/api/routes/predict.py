"""``POST /predict``: one image in field ``file``, or several in field ``files``."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.direct import DirectRoute
from app.api.inference import Classified, EncodedImage, InferenceCore
from app.api.multipart import MultiPartException, Part, parse_multipart, parts_of_form
from app.api.responses import json_answer
from app.api.schemas import BatchPredictResponse, ErrorResponse, PredictResponse
from app.config import Settings
from app.errors import APIError
from app.limits import declared_length

router = APIRouter(tags=["prediction"], route_class=DirectRoute)

ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Empty, corrupt, truncated or non-image file; malformed multipart body.",
        413: "File, request, image dimensions or file count over the limit.",
        415: "An image format that is not supported.",
        422: "Neither 'file' nor 'files' was sent (nor an image as the body), text in 'file', "
        "or a bad query parameter.",
        503: "Queue full, model not ready or shutting down (retry after Retry-After); "
        "model failed its warm-up (code model_failed, no Retry-After).",
    }.items()
}
NON_IMAGE_TYPES = ("text/", "application/json", "application/pdf", "audio/", "video/")
# What JSON Schema cannot say about a file's bytes, in words (the limits' values are filled in
# by app.api.openapi.complete).
IMAGE_BYTES = (
    "the bytes of a JPEG, PNG, WebP, GIF, BMP or TIFF image, of any size in pixels (the server "
    "resizes it), within the server's limits per file (CIFAR10_MAX_UPLOAD_BYTES, "
    "CIFAR10_MAX_IMAGE_PIXELS). Other image formats (SVG, HEIC, ICO, ...) are answered 415, "
    "bytes that are no image 400 invalid_image, an empty file 400 empty_file. Example: "
    "samples/ship.png of the repository."
)
# The multipart body as the OpenAPI document (and so Swagger UI's "Try it out") shows it. The
# route reads the form itself: FastAPI's per-request resolution of File parameters cost more
# than the parsing.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "minLength": 1,
                            "description": "One image (what `curl -F file=@x.png` sends): "
                            + IMAGE_BYTES,
                        },
                        "files": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "format": "binary",
                                "contentMediaType": "application/octet-stream",
                                "minLength": 1,
                            },
                            "description": "Several images, one result each, each as for "
                            "'file'; text entries are ignored.",
                            "default": [],
                        },
                    },
                    "anyOf": [{"required": ["file"]}, {"required": ["files"]}],
                },
                # 'file' is an image (JPEG, PNG, WebP, GIF, BMP, TIFF); no part type is declared for
                # 'files': Swagger UI would send its placeholder entry with it, as an image
                "encoding": {"file": {"contentType": "image/*"}},
            }
        },
    }
}
# ``top_k`` as the OpenAPI document shows it. The route parses it itself: FastAPI's per-request
# parameter resolution was 6 % of the event loop's time at 32 clients (py-spy).
TOP_K_PARAMETER = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 10},
    # "default" is the server's CIFAR10_DEFAULT_TOP_K, filled in by app.api.openapi.complete
    "description": "How many top classes to list (the server's CIFAR10_DEFAULT_TOP_K when absent).",
}
UPLOAD_BODY["parameters"] = [TOP_K_PARAMETER]


def parse_top_k(raw: str | None) -> int | None:
    """The ``top_k`` query value, 1-10, or ``None`` when absent; a 422 otherwise."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 10:
        raise APIError(
            422, "invalid_request", f"top_k: must be an integer from 1 to 10, got {raw!r}"
        )
    return value


# A body of one of these types is the image itself, not a multipart form.
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
RAW_BODY_SCHEMA = {
    "schema": {
        "type": "string",
        "format": "binary",
        "minLength": 1,
        "description": "The image itself: " + IMAGE_BYTES,
    }
}
UPLOAD_BODY["requestBody"]["content"]["image/*"] = RAW_BODY_SCHEMA
UPLOAD_BODY["requestBody"]["content"]["application/octet-stream"] = RAW_BODY_SCHEMA


def _describe(probs: np.ndarray, names: list[str], k: int, filename: str | None) -> dict:
    """One image's result, shaped as ``ImagePrediction``."""
    scores = probs.tolist()
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]
    return {
        "filename": filename,
        "label": names[order[0]],
        "probability": scores[order[0]],
        "top_k": [{"label": names[i], "probability": scores[i]} for i in order],
        "probabilities": dict(zip(names, scores, strict=True)),
    }


@router.post(
    "/predict",
    response_model=PredictResponse | BatchPredictResponse,
    responses=ERRORS,
    summary="Classify one image (field 'file', or the raw body) or several (field 'files')",
    openapi_extra=UPLOAD_BODY,
)
async def predict(request: Request) -> Response:
    # The body is built as plain JSON (the shapes of PredictResponse / BatchPredictResponse, which
    # document it and which the tests validate it against): FastAPI then skips re-validating
    # every response, which is a good part of the per-request cost under load.
    core = InferenceCore.for_request(request)
    top_k = (
        parse_top_k(request.query_params.get("top_k")) if request.scope["query_string"] else None
    )
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(RAW_IMAGE_TYPES):
        return await _predict_raw(request, top_k, core)
    limit = core.settings.max_upload_bytes
    try:
        if content_type.startswith("multipart/form-data"):
            # the body-size cap bounds the body while it streams in
            body = await core.read_body(request, core.caps.multipart)
            parts = await parse_multipart(request.headers, body, limit)
            del body
        else:  # not a form of files: answered below with missing_file
            form = await request.form()
            try:
                parts = await parts_of_form(form, limit)
            finally:
                await form.close()
    except MultiPartException as exc:  # a malformed multipart body
        raise APIError(400, "invalid_multipart", exc.message) from None
    except StarletteHTTPException as exc:  # Starlette's own form parser, same cause
        if isinstance(exc, APIError):  # e.g. the body-size cap, hit while the body streams in
            raise
        raise APIError(400, "invalid_multipart", str(exc.detail)) from None
    return await _predict_form(parts, top_k, core)


async def _predict_raw(request: Request, top_k: int | None, core: InferenceCore) -> Response:
    """The request body is the image itself (``curl --data-binary @x.jpg -H 'Content-Type:
    image/jpeg'``): one result, with the same limits and errors as a multipart upload."""
    limit = core.settings.max_upload_bytes
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:  # refused before reading
        core.check_size(declared, "body")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            break  # refused by classify as file_too_large, without reading the rest
    result = await core.classify([EncodedImage(bytes(data), "body")])
    return _answer(result, [None], top_k, core.settings, single=True)


# What a browser sends for a file field with nothing chosen: an empty part with no file name (an
# HTML form), or named "blob" (an empty Blob: Swagger UI's "Send empty value"). Not a file sent.
UNCHOSEN_FILENAMES = ("", "blob")


def _nothing_chosen(part: Part) -> bool:
    return part.is_file and not part.data and (part.filename or "") in UNCHOSEN_FILENAMES


async def _predict_form(parts: list[Part], top_k: int | None, core: InferenceCore) -> Response:
    parts = [p for p in parts if not _nothing_chosen(p)]
    named_file = [p for p in parts if p.name == "file"]
    file = named_file[-1] if named_file else None  # as Starlette's FormData.get: the last
    if file is not None and not file.is_file:
        raise APIError(422, "invalid_file", "field 'file' must be a file upload, not text")
    # Text in 'files' cannot be an image; Swagger UI sends placeholder text for an unused array.
    files = [p for p in parts if p.name == "files" and p.is_file]
    uploads = ([file] if file is not None else []) + files
    if not uploads:
        raise APIError(
            422, "missing_file", "send an image in the multipart field 'file' or 'files'"
        )
    core.check_count(len(uploads))
    images = []
    for upload in uploads:
        name = upload.filename or "upload"
        content_type = upload.content_type.lower()
        if content_type.startswith(NON_IMAGE_TYPES):
            raise APIError(415, "unsupported_media_type", f"{name}: {content_type} is not an image")
        images.append(EncodedImage(upload.data, name))
    result = await core.classify(images)
    filenames = [u.filename for u in uploads]
    single = file is not None and len(uploads) == 1
    return _answer(result, filenames, top_k, core.settings, single)


def _answer(
    result: Classified,
    filenames: list[str | None],
    top_k: int | None,
    settings: Settings,
    single: bool,
) -> Response:
    model = result.model
    k = min(top_k or settings.default_top_k, len(model.class_names))
    results = [
        _describe(p, model.class_names, k, name)
        for p, name in zip(result.probabilities, filenames, strict=True)
    ]
    ref = {"name": model.name, "version": model.version}
    if single:
        return json_answer({**results[0], "model": ref})
    return json_answer({"model": ref, "results": results})
