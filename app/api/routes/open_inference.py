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

import json
import struct

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.images import decode_image, pixel_array
from app.api.protocol import (
    DEFAULT_INPUT_SIZE,
    IMAGE_BASE64,
    json_request_body,
    protocol_errors,
    protocol_serving,
    served_model,
)
from app.errors import APIError
from app.model import ServedModel

router = APIRouter(prefix="/v2", tags=["inference"])
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
async def live() -> dict:
    return {"live": True}


def _is_ready(request: Request) -> bool:
    batcher = getattr(request.app.state, "batcher", None)
    return batcher is not None and batcher.ready.is_set()


@operations.get("/health/ready", summary="Readiness: the model is loaded and warmed up")
async def ready(request: Request) -> Response:
    is_ready = _is_ready(request)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@operations.get("/models/{name}", summary="Model metadata")
@operations.get("/models/{name}/versions/{version}", summary="Model metadata, one version")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    async def handler() -> Response:
        return JSONResponse(_metadata(served_model(request, name, version)))

    return await protocol_errors(handler)


@operations.get("/models/{name}/ready", summary="Model readiness")
@operations.get("/models/{name}/versions/{version}/ready", summary="Model readiness, one version")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    async def handler() -> Response:
        served_model(request, name, version)
        is_ready = _is_ready(request)
        return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    return await protocol_errors(handler)


def infer_body(h: int, w: int) -> dict:
    """The ``infer`` body for one ``[h, w, 3]`` image, as pixels or encoded (its description
    says what else the server takes)."""

    def tensor(datatype: str, shape: dict, items: dict, count: int) -> dict:
        return {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"const": INPUT},
                "datatype": {"const": datatype},
                "shape": shape,
                "data": {"type": "array", "items": items, "minItems": count, "maxItems": count},
            },
        }

    one = {"type": "integer", "const": 1}
    one_image = {"type": "array", "prefixItems": [one], "minItems": 1, "maxItems": 1}
    encoded = tensor("BYTES", one_image, IMAGE_BASE64, 1)
    byte = {"type": "integer", "minimum": 0, "maximum": 255}
    pixels = tensor("UINT8", {"const": [1, h, w, 3]}, byte, h * w * 3)
    output = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"enum": list(OUTPUTS)},
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"binary_data": {"type": "boolean"}},
            },
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "description": "The schema describes one image per request (shape [1], or [1, h, w, 3]); "
        "the server also takes N images (shape [N] or [N, h, w, 3]) up to the images-per-request "
        "limit, and Triton's binary tensor extension.",
        "properties": {
            "id": {"type": "string"},
            "inputs": {
                "type": "array",
                "items": {"oneOf": [encoded, pixels]},
                "minItems": 1,
                "maxItems": 1,
            },
            "outputs": {"type": "array", "items": output},
            "parameters": {
                "type": "object",
                "additionalProperties": False,
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
    async def handler() -> Response:
        settings, model, batcher, metrics = protocol_serving(request, name, version)
        header, tail = await _read_request(request)
        images = await _input_images(header, tail, settings, model)
        probs, model = await batcher.submit_tagged(images)  # the version that computed them
        labels = [model.class_names[i] for i in probs.argmax(axis=1)]
        for label in labels:
            metrics.predictions.labels(label).inc()
        return _response(header, model, probs, labels)

    return await protocol_errors(handler)


async def _read_request(request: Request) -> tuple[dict, bytes]:
    body = await request.body()
    length = request.headers.get(HEADER_LENGTH.lower())
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise APIError(400, "invalid_request", f"{HEADER_LENGTH} must be the JSON header size")
        raw_header, tail = body[: int(length)], body[int(length) :]
    else:
        raw_header, tail = body, b""
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, "invalid_request", f"the request is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise APIError(400, "invalid_request", "the request needs an 'inputs' list")
    return header, tail


def _binary_size(tensor: dict) -> int | None:
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size")
    return size if isinstance(size, int) and size >= 0 else None


async def _input_images(header: dict, tail: bytes, settings, model: ServedModel) -> np.ndarray:
    inputs = header["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        raise APIError(400, "invalid_request", f"send exactly one input, named '{INPUT}'")
    tensor = inputs[0]
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise APIError(400, "invalid_request", "'shape' must be a list of non-negative integers")
    count = shape[0] if shape else 0
    if count < 1:
        raise APIError(400, "invalid_request", "the input holds no image")
    if count > settings.max_files:
        raise APIError(
            413, "too_many_files", f"{count} images sent; the limit is {settings.max_files}"
        )
    size = _binary_size(tensor)
    raw = tail[:size] if size is not None else None
    if size is not None and len(raw) != size:
        raise APIError(400, "invalid_request", "the binary data is shorter than announced")
    if datatype == "UINT8":
        return _uint8_tensor(tensor, shape, raw, model)
    if datatype == "BYTES":
        blobs = _bytes_elements(tensor, raw, int(np.prod(shape)))
        if len(blobs) != count:
            raise APIError(400, "invalid_request", "a BYTES input must have shape [N] or [N, 1]")
        for i, blob in enumerate(blobs):
            if len(blob) > settings.max_upload_bytes:
                raise APIError(
                    413,
                    "file_too_large",
                    f"image {i}: larger than the limit of {settings.max_upload_bytes} bytes",
                )
        return np.stack(
            [await decode_image(b, f"image {i}", settings, model) for i, b in enumerate(blobs)]
        )
    raise APIError(400, "invalid_request", "the input's datatype must be UINT8 or BYTES")


def _uint8_tensor(
    tensor: dict, shape: list[int], raw: bytes | None, model: ServedModel
) -> np.ndarray:
    h, w = model.input_size
    if shape[1:] != [h, w, 3]:
        raise APIError(400, "invalid_request", f"a UINT8 input must have shape [N, {h}, {w}, 3]")
    if raw is not None:
        values = np.frombuffer(raw, dtype=np.uint8)
    else:
        pixels = pixel_array(tensor.get("data"))
        if pixels is None:
            raise APIError(400, "invalid_request", "UINT8 'data' must be integers within 0-255")
        values = pixels.ravel()
    if values.size != int(np.prod(shape)):
        raise APIError(
            400,
            "invalid_request",
            f"'data' holds {values.size} values, the shape {int(np.prod(shape))}",
        )
    return values.astype(np.uint8).reshape(shape)


def _bytes_elements(tensor: dict, raw: bytes | None, count: int) -> list[bytes]:
    """BYTES elements: binary (4-byte little-endian length, then the bytes, each) or JSON
    strings holding base64."""
    if raw is not None:
        out, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise APIError(400, "invalid_request", "truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, offset)
            out.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return out
    import base64
    import binascii

    data = tensor.get("data")
    if not isinstance(data, list):
        raise APIError(400, "invalid_request", "'data' must be a list")
    flat = [d for row in data for d in (row if isinstance(row, list) else [row])]
    try:
        return [base64.b64decode(d, validate=True) for d in flat]
    except (TypeError, binascii.Error):
        raise APIError(
            400, "invalid_request", "BYTES data in JSON must be base64 strings"
        ) from None


def _response(header: dict, model: ServedModel, probs: np.ndarray, labels: list[str]) -> Response:
    requested = header.get("outputs")
    binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    if requested is None:
        wanted = [("probabilities", binary_default)]
    else:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise APIError(400, "invalid_request", "'outputs' must be a list of objects")
        wanted = []
        for o in requested:
            if o.get("name") not in OUTPUTS:
                raise APIError(
                    400,
                    "invalid_request",
                    f"unknown output {o.get('name')!r}; use {', '.join(OUTPUTS)}",
                )
            binary = (o.get("parameters") or {}).get("binary_data", binary_default)
            wanted.append((o["name"], bool(binary)))
    outputs, tail = [], []
    for output_name, binary in wanted:
        if output_name == "probabilities":
            entry = {"name": output_name, "datatype": "FP32", "shape": list(probs.shape)}
            blob = probs.astype("<f4").tobytes()
            value = probs.ravel().tolist()
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
    if "id" in header:
        body["id"] = header["id"]
    if not tail:
        return JSONResponse(body)
    encoded = json.dumps(body).encode()
    return Response(
        encoded + b"".join(tail),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(encoded))},
    )
