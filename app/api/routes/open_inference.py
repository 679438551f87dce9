"""Open Inference Protocol v2 (KServe v2, Triton HTTP): health, metadata, readiness, infer.

``POST /v2/models/{name}[/versions/{version}]/infer`` takes the input ``image`` either as a
``UINT8`` tensor ``[N, 32, 32, 3]`` or as a ``BYTES`` tensor ``[N]`` of encoded images (decoded
by the same code as ``/predict``), in JSON or with Triton's binary-data extension (what
``tritonclient`` sends by default: a JSON header of ``Inference-Header-Content-Length`` bytes,
then the raw tensors). It answers ``probabilities`` (``FP32 [N, classes]``) and, where asked
for, ``labels`` (``BYTES [N]``, the top class), in JSON or binary as the request asks.

Errors follow the protocol's shape, ``{"error": "message"}``, with the same statuses and
limits as ``/predict``.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from app.api.decoding import InvalidInputError, decode_base64, pixel_array, refuse_nulls
from app.api.direct import DirectRoute
from app.api.inference import Classified, EncodedImage, InferenceCore, served_model
from app.api.protocol import DEFAULT_INPUT_SIZE, IMAGE_BASE64, json_request_body
from app.api.responses import json_answer
from app.model import ServedModel

router = APIRouter(prefix="/v2", tags=["inference"], route_class=DirectRoute)
operations = APIRouter(prefix="/v2", tags=["open inference protocol"])

INPUT = "image"
OUTPUTS = ("probabilities", "labels")
HEADER_LENGTH = "Inference-Header-Content-Length"


def _metadata(model: ServedModel) -> dict:
    h, w = model.input_size
    platform = {"openvino": "openvino", "tensorflow": "tensorflow_savedmodel"}
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": platform.get(model.runtime.name, model.runtime.name),
        "inputs": [
            {"name": INPUT, "datatype": "UINT8", "shape": [-1, h, w, 3]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.class_names)]},
            {"name": "labels", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {
            "input_bytes": "the input 'image' may also be BYTES [N]: encoded images (JPEG, PNG, "
            "WebP, GIF, BMP, TIFF), resized like /predict's uploads",
            "runtime": model.runtime.name,
            "precision": model.runtime.precision,
            "class_names": model.class_names,
        },
    }


@operations.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict:
    return {
        "name": request.app.title,
        "version": request.app.version,
        "extensions": ["binary_tensor_data"],
    }


@operations.get("/health/live", summary="Liveness")
async def live(request: Request) -> Response:
    batcher = getattr(request.app.state, "batcher", None)
    is_live = batcher is None or batcher.hung() is None
    return JSONResponse({"live": is_live}, status_code=200 if is_live else 503)


def _is_ready(request: Request) -> bool:
    batcher = getattr(request.app.state, "batcher", None)
    return batcher is not None and batcher.health() is None


@operations.get("/health/ready", summary="Readiness: the model is loaded and warmed up")
async def ready(request: Request) -> Response:
    is_ready = _is_ready(request)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@operations.get("/models/{name}", summary="Model metadata")
@operations.get("/models/{name}/versions/{version}", summary="Model metadata, one version")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    return JSONResponse(_metadata(served_model(request, name, version)))


@operations.get("/models/{name}/ready", summary="Model readiness")
@operations.get("/models/{name}/versions/{version}/ready", summary="Model readiness, one version")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    served_model(request, name, version)
    is_ready = _is_ready(request)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


class _Body(BaseModel):
    # Strict: a shape of 1.0 or true, a "yes" for a boolean, a null for an optional key, are
    # errors, not guesses. Unknown keys are ignored, as the protocol allows extensions.
    model_config = ConfigDict(strict=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, value: object) -> object:
        return refuse_nulls(value, cls.model_fields)


class TensorParameters(_Body):
    binary_data_size: int | None = Field(None, ge=0)


class InferTensor(_Body):
    name: str
    shape: list[NonNegativeInt] = Field(max_length=8)
    datatype: str
    parameters: TensorParameters | None = None
    data: Any = None


class OutputParameters(_Body):
    binary_data: bool | None = None


class OutputRequest(_Body):
    name: Literal["probabilities", "labels"]
    parameters: OutputParameters | None = None


class InferParameters(_Body):
    binary_data_output: bool = False


class InferRequest(_Body):
    """The infer request's JSON (header), as the protocol defines it."""

    id: str | None = None
    inputs: list[InferTensor]
    outputs: list[OutputRequest] | None = None
    parameters: InferParameters | None = None


def infer_body(h: int, w: int) -> dict:
    """The ``infer`` body for one ``[h, w, 3]`` image, as pixels or encoded (its description
    says what else the server takes)."""

    def tensor(datatype: str, shape: dict, items: dict, count: int) -> dict:
        return {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"const": INPUT},
                "datatype": {"const": datatype},
                "shape": shape,
                "data": {"type": "array", "items": items, "minItems": count, "maxItems": count},
            },
        }

    one = {"type": "integer", "const": 1}
    # [1], or [1, 1] as Triton's clients often send a BYTES batch ([N] or [N, 1])
    one_image = {"type": "array", "items": one, "minItems": 1, "maxItems": 2}
    encoded = tensor("BYTES", one_image, IMAGE_BASE64, 1)
    byte = {"type": "integer", "minimum": 0, "maximum": 255}
    pixels = tensor("UINT8", {"const": [1, h, w, 3]}, byte, h * w * 3)
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"enum": list(OUTPUTS)},
            "parameters": {
                "type": "object",
                "properties": {"binary_data": {"type": "boolean"}},
            },
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "description": "The schema describes one image per request (BYTES shape [1] or [1, 1], "
        "or UINT8 [1, h, w, 3]); the server also takes N images (BYTES [N] or [N, 1], UINT8 "
        "[N, h, w, 3]) up to the images-per-request limit, and Triton's binary tensor extension. "
        "Keys the protocol does not define are "
        "ignored, as its extensions (parameters) may carry anything.",
        "properties": {
            "id": {"type": "string"},
            "inputs": {
                "type": "array",
                "items": {"oneOf": [encoded, pixels]},
                "minItems": 1,
                "maxItems": 1,
            },
            "outputs": {
                "type": "array",
                "items": output,
                # each name at most once (JSON Schema 2020-12, as OpenAPI 3.1 reads it)
                "allOf": [
                    {
                        "contains": {"type": "object", "properties": {"name": {"const": name}}},
                        "minContains": 0,
                        "maxContains": 1,
                    }
                    for name in OUTPUTS
                ],
                "maxItems": len(OUTPUTS),
                "description": "The outputs to answer, each at most once (an output named "
                "twice is refused with 400, as Triton refuses it); absent: probabilities.",
            },
            "parameters": {
                "type": "object",
                "properties": {"binary_data_output": {"type": "boolean"}},
            },
        },
    }


INFER_BODY = json_request_body(infer_body(*DEFAULT_INPUT_SIZE))


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=INFER_BODY)
@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference, one version",
    openapi_extra=INFER_BODY,
)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    core = InferenceCore.for_request(request, name, version)
    header_length = request.headers.get(HEADER_LENGTH)
    caps = core.caps
    body = await core.read_body(request, caps.json if header_length is None else caps.binary)
    header, tail = _split_binary(body, header_length)
    del body
    infer_request = await core.parse_json(header, InferRequest)
    _check_outputs(infer_request)
    images = _input_images(infer_request, tail, core)
    result = await (
        core.classify_batch(images) if isinstance(images, np.ndarray) else core.classify(images)
    )
    return _response(infer_request, result)


def _check_outputs(request: InferRequest) -> None:
    """Each output at most once: Triton refuses a repeated one (INVALID_ARG, "output 'x' already
    exists in request"), and so does this server, with the same words, before any inference."""
    seen = set()
    for output in request.outputs or ():
        if output.name in seen:
            raise InvalidInputError(f"output '{output.name}' already exists in request")
        seen.add(output.name)


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Triton's binary extension: the JSON header, then the raw tensors."""
    if header_length is None:
        return body, b""
    # ASCII digits only, and few of them: str.isdigit accepts "²", which int() refuses, and
    # int() refuses strings of over 4,300 digits
    if not (header_length.isascii() and header_length.isdigit() and len(header_length) <= 18):
        raise InvalidInputError(f"{HEADER_LENGTH} must be the JSON header's size in bytes")
    if int(header_length) > len(body):
        raise InvalidInputError(f"{HEADER_LENGTH} must be the JSON header's size in bytes")
    return body[: int(header_length)], body[int(header_length) :]


def _input_images(
    request: InferRequest, tail: bytes, core: InferenceCore
) -> np.ndarray | list[EncodedImage]:
    """The ``image`` input as a pixel batch (UINT8) or encoded images (BYTES)."""
    inputs = request.inputs
    if len(inputs) != 1 or inputs[0].name != INPUT:
        raise InvalidInputError(f"send exactly one input, named '{INPUT}'")
    tensor = inputs[0]
    shape = tensor.shape
    core.check_count(shape[0] if shape else 0)
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    raw = tail[:size] if size is not None else None
    if raw is not None and len(raw) != size:
        raise InvalidInputError("the binary data is shorter than announced")
    if tensor.datatype == "UINT8":
        return _uint8_tensor(tensor, raw, core)
    if tensor.datatype == "BYTES":
        blobs = _bytes_elements(tensor, raw)
        if len(blobs) != shape[0] or shape[1:] not in ([], [1]):
            raise InvalidInputError("a BYTES input must have shape [N] or [N, 1], one per image")
        return [EncodedImage(blob, f"image {i}") for i, blob in enumerate(blobs)]
    raise InvalidInputError("the input's datatype must be UINT8 or BYTES")


def _uint8_tensor(tensor: InferTensor, raw: bytes | None, core: InferenceCore) -> np.ndarray:
    h, w = core.model.input_size
    shape = tensor.shape
    if shape[1:] != [h, w, 3]:
        raise InvalidInputError(f"a UINT8 input must have shape [N, {h}, {w}, 3]")
    if raw is not None:
        values = np.frombuffer(raw, dtype=np.uint8)
    else:
        values = pixel_array(tensor.data, "UINT8 'data'").ravel()
    if values.size != math.prod(shape):
        raise InvalidInputError(f"'data' holds {values.size} values, the shape {math.prod(shape)}")
    return values.reshape(shape)


def _bytes_elements(tensor: InferTensor, raw: bytes | None) -> list[bytes]:
    """BYTES elements: binary (4-byte little-endian length, then the bytes, each) or JSON
    strings holding base64 (a flat list, or ``[N, 1]`` nested)."""
    if raw is not None:
        out, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidInputError("truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, offset)
            if offset + 4 + length > len(raw):
                raise InvalidInputError("truncated BYTES element")
            out.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return out
    data = tensor.data
    if not isinstance(data, list):
        raise InvalidInputError("BYTES 'data' must be a list of base64 strings")
    flat = [d for row in data for d in (row if isinstance(row, list) else [row])]
    return [decode_base64(d, f"image {i}") for i, d in enumerate(flat)]


def _response(request: InferRequest, result: Classified) -> Response:
    binary_default = bool(request.parameters and request.parameters.binary_data_output)
    if request.outputs is None:
        wanted = [("probabilities", binary_default)]
    else:
        wanted = []
        for o in request.outputs:
            binary = o.parameters.binary_data if o.parameters else None
            wanted.append((o.name, binary_default if binary is None else binary))
    probs, labels, model = result.probabilities, result.labels, result.model
    outputs, tail = [], []
    for output_name, binary in wanted:
        if output_name == "probabilities":
            entry = {"name": output_name, "datatype": "FP32", "shape": list(probs.shape)}
            blob = probs.astype("<f4").tobytes()
            value = probs.ravel()
        else:
            entry = {"name": output_name, "datatype": "BYTES", "shape": [len(labels)]}
            blob = b"".join(struct.pack("<I", len(x.encode())) + x.encode() for x in labels)
            value = labels
        if binary:
            entry["parameters"] = {"binary_data_size": len(blob)}
            tail.append(blob)
        else:
            entry["data"] = value
        outputs.append(entry)
    body = {"model_name": model.name, "model_version": str(model.version), "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    if not tail:
        return json_answer(body)
    encoded = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        encoded + b"".join(tail),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(encoded))},
    )
