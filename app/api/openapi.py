"""The OpenAPI document, completed with what only the running server knows.

Route declarations describe the shapes; this adds what makes a schema-valid request one the
server accepts: the served model's name and version as the only values of ``{name}`` and
``{version}``, and the configured limits (images per request). Request bodies that carry images
mark them with the media type ``image/*`` (multipart parts, raw bodies) or the string format
``x-image-base64``: such a value must be an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF),
which a JSON schema cannot say by itself.
"""

from __future__ import annotations

import copy

from app.config import Settings
from app.model import ServedModel

IMAGE_BASE64 = {
    "type": "string",
    "format": "x-image-base64",
    "description": "An encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF), base64.",
}


def pixels_schema(h: int, w: int) -> dict:
    """A ``[h, w, 3]`` nested array of integers 0-255."""
    channel = {"type": "integer", "minimum": 0, "maximum": 255}
    pixel = {"type": "array", "items": channel, "minItems": 3, "maxItems": 3}
    row = {"type": "array", "items": pixel, "minItems": w, "maxItems": w}
    return {"type": "array", "items": row, "minItems": h, "maxItems": h}


def _tf_serving_body(model: ServedModel, settings: Settings) -> dict:
    h, w = model.input_size
    b64 = {
        "type": "object",
        "required": ["b64"],
        "additionalProperties": False,
        "properties": {"b64": IMAGE_BASE64},
    }
    value = {"anyOf": [pixels_schema(h, w), b64]}
    named = {
        "type": "object",
        "required": ["image"],
        "additionalProperties": False,
        "properties": {"image": value},
    }
    batch = {"type": "array", "minItems": 1, "maxItems": settings.max_files}
    instances = {**batch, "items": {"anyOf": [pixels_schema(h, w), b64, named]}}
    columns = {
        "anyOf": [
            {**batch, "items": value},
            {
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {"image": {**batch, "items": value}},
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


def _open_inference_body(model: ServedModel) -> dict:
    h, w = model.input_size
    one = {"type": "integer", "const": 1}
    encoded = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
        "properties": {
            "name": {"const": "image"},
            "datatype": {"const": "BYTES"},
            "shape": {"type": "array", "prefixItems": [one], "minItems": 1, "maxItems": 1},
            "data": {"type": "array", "items": IMAGE_BASE64, "minItems": 1, "maxItems": 1},
        },
    }
    size = h * w * 3
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
        "properties": {
            "name": {"const": "image"},
            "datatype": {"const": "UINT8"},
            "shape": {"const": [1, h, w, 3]},
            "data": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 255},
                "minItems": size,
                "maxItems": size,
            },
        },
    }
    output = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"enum": ["probabilities", "labels"]},
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
                "items": {"oneOf": [encoded, tensor]},
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


def complete(schema: dict, model: ServedModel | None, settings: Settings) -> dict:
    """A copy of ``schema`` with the served model's names, versions and the limits filled in
    (unchanged while no model is loaded)."""
    if model is None:
        return schema
    schema = copy.deepcopy(schema)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path":
                    continue
                if parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": [model.name]}
                elif parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": [str(model.version)]}
            content = operation.get("requestBody", {}).get("content", {})
            json_body = content.get("application/json")
            if json_body is not None and path.endswith(":predict"):
                json_body["schema"] = _tf_serving_body(model, settings)
            elif json_body is not None and path.endswith("/infer"):
                json_body["schema"] = _open_inference_body(model)
            form = content.get("multipart/form-data")
            if form is not None:
                files = form["schema"]["properties"]["files"]
                files["maxItems"] = max(settings.max_files - 1, 1)
    return schema
