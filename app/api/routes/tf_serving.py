"""TensorFlow Serving's REST API: version status, metadata and ``:predict``.

``POST /v1/models/{name}[/versions/{v}]:predict`` takes TF Serving's row format
(``{"instances": [...]}``) or columnar format (``{"inputs": ...}``); each instance is a uint8
``[32, 32, 3]`` array, an encoded image as ``{"b64": "..."}`` (decoded by the same code as
``/predict``), or either of them under the input's name (``{"image": ...}``). It answers as TF
Serving does: ``{"predictions": [[...10 probabilities], ...]}`` for rows, ``{"outputs": ...}``
for columns. Errors have TF Serving's shape, ``{"error": "message"}``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, model_validator

from app.api.decoding import InvalidInputError, decode_base64, pixel_array, refuse_nulls
from app.api.direct import DirectRoute
from app.api.inference import EncodedImage, InferenceCore, served_model
from app.api.protocol import DEFAULT_INPUT_SIZE, IMAGE_BASE64, json_request_body, pixels_schema
from app.api.responses import json_answer
from app.config import Settings
from app.model import ServedModel

router = APIRouter(prefix="/v1", tags=["inference"], route_class=DirectRoute)
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
    reloader = request.app.state.reloader
    failed = reloader.failure if reloader is not None else None
    if failed is not None and version == str(failed.version):  # a version that failed
        model = served_model(request, name, None)
    else:
        model = served_model(request, name, version)
    return JSONResponse(_version_status(request, model, version))


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
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }
    )


class PredictRequest(BaseModel):
    """The ``:predict`` body: rows (``instances``) or columns (``inputs``); each instance is
    checked by ``_instance``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    signature_name: Literal["serving_default"] = "serving_default"
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, value: object) -> object:
        return refuse_nulls(value, cls.model_fields)

    @model_validator(mode="after")
    def _rows_or_columns(self) -> PredictRequest:
        if (self.instances is None) == (self.inputs is None):
            raise ValueError("send either 'instances' or 'inputs'")
        return self


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
    core = InferenceCore.for_request(request, name, version)
    raw = await core.read_body(request, core.caps.json)
    body = await core.parse_json(raw, PredictRequest)
    del raw  # the parsed form is what is used from here
    rows = body.instances is not None
    items = _unwrap(body.instances if rows else body.inputs)
    if not isinstance(items, list):
        raise InvalidInputError("'inputs' must be a list of instances (or {'image': [...]})")
    core.check_count(len(items))
    result = await core.classify([_instance(_unwrap(x), i, core) for i, x in enumerate(items)])
    return json_answer({"predictions" if rows else "outputs": result.probabilities})


def _unwrap(value):
    """``{"image": x}`` (the input named) → ``x``; anything else as it is."""
    if isinstance(value, dict) and set(value) == {INPUT}:
        return value[INPUT]
    return value


def _instance(value, index: int, core: InferenceCore) -> EncodedImage | np.ndarray:
    name = f"instance {index}"
    if isinstance(value, dict) and set(value) == {"b64"}:
        return EncodedImage(decode_base64(value["b64"], f"{name}: 'b64'"), name)
    if not isinstance(value, list):
        raise InvalidInputError(
            f"{name}: must be a [h, w, 3] array of integers 0-255 or {{'b64': image}}"
        )
    return core.pixels(pixel_array(value, name), name)
