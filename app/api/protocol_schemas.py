"""The 200 bodies of the two protocols' operations, as the server sends them (the routes build
them as plain JSON, so FastAPI documents them with an empty schema): the Open Inference
Protocol v2's (KServe v2, Triton HTTP) and TensorFlow Serving REST's. ``app.api.openapi``
puts them in the document; the fuzzer checks every answer against them."""

from __future__ import annotations

_STRINGS = {"type": "array", "items": {"type": "string"}}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
OIP_LIVE = {
    "type": "object",
    "required": ["live"],
    "properties": {"live": {"type": "boolean"}},
}
OIP_READY = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"type": "boolean"}},
}
OIP_MODEL_READY = {
    "type": "object",
    "required": ["name", "ready"],
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
}
OIP_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": _STRINGS,
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_META},
        "outputs": {"type": "array", "items": _TENSOR_META},
        "parameters": {"type": "object"},
    },
}
OIP_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                **_TENSOR_META,
                "properties": {
                    **_TENSOR_META["properties"],
                    "data": {
                        "type": "array",
                        "description": "probabilities: numbers, row after row; labels: strings",
                        "items": {"type": ["number", "string"]},
                    },
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        "description": "binary_data_size where the output is in the binary tail",
                    },
                },
            },
        },
    },
}
_PROBABILITY_ROWS = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
    "description": "One row of class probabilities per image, in the order of class_names.",
}
TFS_PREDICT_RESPONSE = {
    "type": "object",
    "description": "Row format (instances) answers predictions; columnar (inputs) answers outputs.",
    "oneOf": [
        {"required": ["predictions"], "properties": {"predictions": _PROBABILITY_ROWS}},
        {"required": ["outputs"], "properties": {"outputs": _PROBABILITY_ROWS}},
    ],
}
TFS_VERSION_STATUS = {
    "type": "object",
    "required": ["model_version_status"],
    "properties": {
        "model_version_status": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "state", "status"],
                "properties": {
                    "version": {"type": "string"},
                    "state": {"type": "string"},
                    "status": {
                        "type": "object",
                        "properties": {
                            "error_code": {"type": "string"},
                            "error_message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
TFS_METADATA = {
    "type": "object",
    "required": ["model_spec", "metadata"],
    "properties": {
        "model_spec": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {
                "name": {"type": "string"},
                "signature_name": {"type": "string"},
                "version": {"type": "string"},
            },
        },
        "metadata": {
            "type": "object",
            "required": ["signature_def"],
            "description": "TensorFlow Serving's SignatureDefMap, as its REST API shows it.",
            "properties": {"signature_def": {"type": "object"}},
        },
    },
}

# (method, path) -> the 200 body's schema
OK_BODIES: dict[tuple[str, str], dict] = {
    ("get", "/v2/health/live"): OIP_LIVE,
    ("get", "/v2/health/ready"): OIP_READY,
    ("get", "/v2/models/{name}"): OIP_MODEL_METADATA,
    ("get", "/v2/models/{name}/versions/{version}"): OIP_MODEL_METADATA,
    ("get", "/v2/models/{name}/ready"): OIP_MODEL_READY,
    ("get", "/v2/models/{name}/versions/{version}/ready"): OIP_MODEL_READY,
    ("post", "/v2/models/{name}/infer"): OIP_INFER_RESPONSE,
    ("post", "/v2/models/{name}/versions/{version}/infer"): OIP_INFER_RESPONSE,
    ("get", "/v1/models/{name}"): TFS_VERSION_STATUS,
    ("get", "/v1/models/{name}/versions/{version}"): TFS_VERSION_STATUS,
    ("get", "/v1/models/{name}/metadata"): TFS_METADATA,
    ("get", "/v1/models/{name}/versions/{version}/metadata"): TFS_METADATA,
    ("post", "/v1/models/{name}:predict"): TFS_PREDICT_RESPONSE,
    ("post", "/v1/models/{name}/versions/{version}:predict"): TFS_PREDICT_RESPONSE,
}
