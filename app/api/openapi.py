"""The OpenAPI document, completed with what only the running server knows.

Route declarations describe the shapes; this adds what makes a schema-valid request one the
server accepts: the served model's name and version as the only values of ``{name}`` and
``{version}``, and the configured limits (images per request). Request bodies that carry images
mark them with the media type ``image/*`` (multipart parts, raw bodies) or the string format
``x-image-base64``: such a value must be an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF),
which a JSON schema cannot say by itself. Each protocol's body schema is its router's
(``infer_body``, ``predict_body``); here it gets the served model's input size and the limits.
"""

from __future__ import annotations

import copy

from app.api.routes.open_inference import infer_body
from app.api.routes.tf_serving import predict_body
from app.config import Settings
from app.model import ServedModel


def complete(schema: dict, model: ServedModel | None, settings: Settings) -> dict:
    """A copy of ``schema`` with the served model's names, versions and the limits filled in
    (unchanged while no model is loaded)."""
    if model is None:
        return schema
    schema = copy.deepcopy(schema)
    h, w = model.input_size
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
                json_body["schema"] = predict_body(h, w, settings.max_files)
            elif json_body is not None and path.endswith("/infer"):
                json_body["schema"] = infer_body(h, w)
            form = content.get("multipart/form-data")
            if form is not None:
                files = form["schema"]["properties"]["files"]
                files["maxItems"] = max(settings.max_files - 1, 1)
    return schema
