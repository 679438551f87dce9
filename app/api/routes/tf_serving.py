"""TensorFlow Serving's REST API: version status, metadata and ``:predict``.

``POST /v1/models/{name}[/versions/{v}]:predict`` takes TF Serving's row format
(``{"instances": [...]}``) or columnar format (``{"inputs": ...}``); each instance is a uint8
``[32, 32, 3]`` array, an encoded image as ``{"b64": "..."}`` (decoded by the same code as
``/predict``), or either of them under the input's name (``{"image": ...}``). It answers as TF
Serving does: ``{"predictions": [[...10 probabilities], ...]}`` for rows, ``{"outputs": ...}``
for columns. Errors have TF Serving's shape, ``{"error": "message"}``.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.images import decode_image, pixel_array
from app.api.protocol import (
    DEFAULT_INPUT_SIZE,
    IMAGE_BASE64,
    json_request_body,
    pixels_schema,
    protocol_errors,
    protocol_serving,
    served_model,
)
from app.config import Settings
from app.errors import APIError
from app.model import ServedModel

router = APIRouter(prefix="/v1", tags=["inference"])
operations = APIRouter(prefix="/v1", tags=["tensorflow serving"])

INPUT = "image"
OUTPUT = "probabilities"


def _version_status(request: Request, model: ServedModel, version: str | None) -> dict:
    statuses = [
        {
            "version": str(model.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]
    reloader = request.app.state.reloader
    failure = reloader.failure if reloader is not None else None
    if failure is not None and version in (None, str(failure.version)):
        statuses.append(
            {
                "version": str(failure.version),
                "state": "END",
                "status": {"error_code": "UNKNOWN", "error_message": failure.error},
            }
        )
    if version is not None:
        statuses = [s for s in statuses if s["version"] == version]
    return {"model_version_status": statuses}


@operations.get("/models/{name}", summary="Version status")
@operations.get("/models/{name}/versions/{version}", summary="Version status, one version")
async def version_status(request: Request, name: str, version: str | None = None) -> Response:
    async def handler() -> Response:
        reloader = request.app.state.reloader
        failed = reloader.failure if reloader is not None else None
        if failed is not None and version == str(failed.version):  # a version that failed
            model = served_model(request, name, None)
        else:
            model = served_model(request, name, version)
        return JSONResponse(_version_status(request, model, version))

    return await protocol_errors(handler)


def _tensor_info(dtype: str, dims: list[int], name: str) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in dims],
            "unknown_rank": False,
        },
        "name": name,
    }


@operations.get("/models/{name}/metadata", summary="Signature metadata")
@operations.get("/models/{name}/versions/{version}/metadata", summary="Metadata, one version")
async def metadata(request: Request, name: str, version: str | None = None) -> Response:
    async def handler() -> Response:
        model = served_model(request, name, version)
        h, w = model.input_size
        signature = {
            "inputs": {INPUT: _tensor_info("DT_UINT8", [-1, h, w, 3], "serving_default_image:0")},
            "outputs": {
                OUTPUT: _tensor_info(
                    "DT_FLOAT", [-1, len(model.class_names)], "StatefulPartitionedCall:0"
                )
            },
            "method_name": "tensorflow/serving/predict",
        }
        return JSONResponse(
            {
                "model_spec": {
                    "name": model.name,
                    "signature_name": "",
                    "version": str(model.version),
                },
                "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
            }
        )

    return await protocol_errors(handler)


def predict_body(h: int, w: int, max_instances: int) -> dict:
    """The ``:predict`` body: rows or columns of ``[h, w, 3]`` uint8 arrays or base64 images,
    1 to ``max_instances`` of them."""
    b64 = {
        "type": "object",
        "required": ["b64"],
        "additionalProperties": False,
        "properties": {"b64": IMAGE_BASE64},
    }
    value = {"anyOf": [pixels_schema(h, w), b64]}
    named = {
        "type": "object",
        "required": [INPUT],
        "additionalProperties": False,
        "properties": {INPUT: value},
    }
    batch = {"type": "array", "minItems": 1, "maxItems": max_instances}
    instances = {**batch, "items": {"anyOf": [pixels_schema(h, w), b64, named]}}
    columns = {
        "anyOf": [
            {**batch, "items": value},
            {
                "type": "object",
                "required": [INPUT],
                "additionalProperties": False,
                "properties": {INPUT: {**batch, "items": value}},
            },
        ]
    }
    return {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string", "enum": ["serving_default"]},
            "instances": instances,
            "inputs": columns,
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    }


PREDICT_BODY = json_request_body(
    predict_body(*DEFAULT_INPUT_SIZE, Settings.model_fields["max_files"].default)
)


@router.post(
    "/models/{name}:predict", summary="Predict (TF Serving REST)", openapi_extra=PREDICT_BODY
)
@router.post(
    "/models/{name}/versions/{version}:predict",
    summary="Predict, one version (TF Serving REST)",
    openapi_extra=PREDICT_BODY,
)
async def predict(request: Request, name: str, version: str | None = None) -> Response:
    async def handler() -> Response:
        settings, model, batcher, metrics = protocol_serving(request, name, version)
        try:
            body = await request.json()
        except ValueError as exc:
            raise APIError(
                400, "invalid_request", f"the request is not valid JSON ({exc})"
            ) from None
        if not isinstance(body, dict):
            raise APIError(400, "invalid_request", "the request must be a JSON object")
        signature = body.get("signature_name", "serving_default")
        if signature != "serving_default":
            raise APIError(400, "invalid_request", f"unknown signature_name {signature!r}")
        rows = "instances" in body
        if rows == ("inputs" in body):
            raise APIError(400, "invalid_request", "send either 'instances' or 'inputs'")
        items = _unwrap(body["instances"] if rows else body["inputs"])
        if not isinstance(items, list) or not items:
            raise APIError(400, "invalid_request", "no instances to predict")
        if len(items) > settings.max_files:
            raise APIError(
                413,
                "too_many_files",
                f"{len(items)} images sent; the limit is {settings.max_files}",
            )
        images = np.stack(
            [await _instance(_unwrap(x), i, settings, model) for i, x in enumerate(items)]
        )
        probs, model = await batcher.submit_tagged(images)
        for i in probs.argmax(axis=1):
            metrics.predictions.labels(model.class_names[i]).inc()
        key = "predictions" if rows else "outputs"
        return JSONResponse({key: probs.tolist()})

    return await protocol_errors(handler)


def _unwrap(value):
    """``{"image": x}`` (the input named) → ``x``; anything else as it is."""
    if isinstance(value, dict) and set(value) == {INPUT}:
        return value[INPUT]
    return value


async def _instance(value, index: int, settings, model: ServedModel) -> np.ndarray:
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            data = base64.b64decode(value["b64"], validate=True)
        except (TypeError, binascii.Error):
            raise APIError(
                400, "invalid_request", f"instance {index}: 'b64' is not base64"
            ) from None
        if len(data) > settings.max_upload_bytes:
            raise APIError(
                413,
                "file_too_large",
                f"instance {index}: larger than the limit of {settings.max_upload_bytes} bytes",
            )
        return await decode_image(data, f"instance {index}", settings, model)
    h, w = model.input_size
    array = pixel_array(value)
    if array is None or array.shape != (h, w, 3):
        raise APIError(
            400,
            "invalid_request",
            f"instance {index}: must be a [{h}, {w}, 3] array of integers 0-255 or "
            "{'b64': image}",
        )
    return array
