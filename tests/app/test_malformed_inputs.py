"""One table of malformed inputs, sent through all three protocols: every row gets a 4xx JSON
error in the protocol's own shape, and the server answers the next good request.

The image rows are the same for ``/predict`` (multipart files), Open Inference Protocol v2
(a BYTES tensor of base64 strings) and TF Serving REST (``{"b64": ...}`` instances); the body
rows are each protocol's own ways of being malformed (JSON, base64, tensors, forms).
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.helpers import huge_png, image_bytes

GOOD = image_bytes()
PNG_64 = image_bytes("PNG", size=(64, 64))


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def predict_request(blobs: list[bytes]) -> dict:
    if len(blobs) == 1:
        return {"url": "/predict", "files": {"file": ("x.png", blobs[0], "image/png")}}
    files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    return {"url": "/predict", "files": files}


def v2_request(blobs: list[bytes]) -> dict:
    tensor = {"name": "image", "shape": [len(blobs)], "datatype": "BYTES"}
    return {
        "url": "/v2/models/tiny/infer",
        "json": {"inputs": [{**tensor, "data": [_b64(b) for b in blobs]}]},
    }


def v1_request(blobs: list[bytes]) -> dict:
    return {
        "url": "/v1/models/tiny:predict",
        "json": {"instances": [{"b64": _b64(b)} for b in blobs]},
    }


PROTOCOLS = {"predict": predict_request, "v2": v2_request, "v1": v1_request}

# (name, images, status, /predict's error code)
IMAGE_ROWS = [
    ("empty", [b""], 400, "empty_file"),
    ("text", [b"hello, I am text"], 400, "invalid_image"),
    ("truncated", [PNG_64[:120]], 400, "invalid_image"),
    ("header_only", [PNG_64[:33]], 400, "invalid_image"),
    ("zero_size", [huge_png(0, 0)], 400, "invalid_image"),
    ("bomb", [huge_png()], 413, "image_too_large"),
    ("over_our_pixel_limit", [huge_png(8000, 8000)], 413, "image_too_large"),
    ("file_too_large", [image_bytes("BMP", size=(300, 300))], 413, "file_too_large"),
    ("unsupported_format", [image_bytes("ICO", size=(16, 16))], 415, "unsupported_image_type"),
    ("one_bad_among_good", [GOOD, b"\x89PNG\r\n\x1a\n"], 400, "invalid_image"),
    ("too_many_images", [GOOD] * 5, 413, "too_many_files"),  # the fixture allows 4
]


def assert_protocol_error(protocol: str, r, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    if protocol == "predict":
        assert error["message"]
        if code is not None:
            assert error["code"] == code
    else:  # the client protocols' shape: {"error": "message"}
        assert set(r.json()) == {"error"} and isinstance(error, str) and error


def assert_still_serving(client, protocol: str) -> None:
    r = client.post(**PROTOCOLS[protocol]([GOOD]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name,blobs,status,code", IMAGE_ROWS, ids=[r[0] for r in IMAGE_ROWS])
def test_malformed_images_in_every_protocol(client, protocol, name, blobs, status, code):
    r = client.post(**PROTOCOLS[protocol](blobs))
    assert_protocol_error(protocol, r, status, code)
    assert_still_serving(client, protocol)


def _uint8(shape, data, datatype="UINT8") -> dict:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]}


JSON = {"content-type": "application/json"}
HEADER = "Inference-Header-Content-Length"
BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "image",
                "shape": [1, 32, 32, 3],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": 3072},
            }
        ]
    }
).encode()
DEEP = ("[" * 100_000 + "]" * 100_000).encode()
# (protocol, name, request, status); JSON bodies as bytes are sent exactly as written
BODY_ROWS = [
    ("v2", "not_json", {"content": b"{not json", "headers": JSON}, 400),
    ("v2", "not_utf8", {"content": b'{"inputs": "\xff"}', "headers": JSON}, 400),
    ("v2", "deep_nesting", {"content": DEEP, "headers": JSON}, 400),
    ("v2", "deep_nesting_in_data", {"content": b'{"inputs": [{"data": ' + DEEP + b"}]}"}, 400),
    ("v2", "nan", {"content": b'{"inputs": [{"name": "image", "data": [NaN]}]}'}, 400),
    ("v2", "not_an_object", {"json": [1, 2]}, 400),
    ("v2", "no_inputs", {"json": {}}, 400),
    ("v2", "non_ascii_base64", {"json": _uint8([1], ["\u0089"], "BYTES")}, 400),
    ("v2", "bad_padding", {"json": _uint8([1], [_b64(GOOD)[:-1]], "BYTES")}, 400),
    ("v2", "base64_not_a_string", {"json": _uint8([1], [12], "BYTES")}, 400),
    ("v2", "empty_bytes_string", {"json": _uint8([1], [""], "BYTES")}, 400),
    (  # found by the schema fuzzer: a null was taken for an absent key (accepted, 200)
        "v2",
        "parameters_null",
        {"json": {**_uint8([1], [_b64(GOOD)], "BYTES"), "parameters": None}},
        400,
    ),
    (
        "v2",
        "parameters_not_an_object",
        {"json": {**_uint8([1], [_b64(GOOD)], "BYTES"), "parameters": 1}},
        400,
    ),
    (
        "v2",
        "tensor_parameters_not_an_object",
        {
            "json": {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": [_b64(GOOD)],
                        "parameters": [1],
                    }
                ]
            }
        },
        400,
    ),
    (
        "v2",
        "outputs_not_objects",
        {"json": {**_uint8([1], [_b64(GOOD)], "BYTES"), "outputs": ["labels"]}},
        400,
    ),
    (
        "v2",
        "unknown_output",
        {"json": {**_uint8([1], [_b64(GOOD)], "BYTES"), "outputs": [{"name": "logits"}]}},
        400,
    ),
    ("v2", "wrong_datatype", {"json": _uint8([1, 32, 32, 3], [0] * 3072, "FP32")}, 400),
    ("v2", "wrong_shape", {"json": _uint8([1, 16, 16, 3], [0] * 768)}, 400),
    ("v2", "shape_not_integers", {"json": _uint8([1.5, 32, 32, 3], [0] * 3072)}, 400),
    ("v2", "shape_of_booleans", {"json": _uint8([True], [_b64(GOOD)], "BYTES")}, 400),
    ("v2", "zero_images", {"json": _uint8([0, 32, 32, 3], [])}, 400),
    ("v2", "data_count_differs", {"json": _uint8([1, 32, 32, 3], [0] * 3000)}, 400),
    ("v2", "pixels_out_of_range", {"json": _uint8([1, 32, 32, 3], [256] * 3072)}, 400),
    (
        "v2",
        "pixel_beyond_64_bits",
        {
            "content": json.dumps(_uint8([1, 32, 32, 3], [0] * 3071))
            .replace("[0,", "[99999999999999999999999,", 1)
            .encode(),
            "headers": JSON,
        },
        400,
    ),
    ("v2", "too_many_pixel_images", {"json": _uint8([5, 32, 32, 3], [0] * 5 * 3072)}, 413),
    (
        "v2",
        "binary_header_length_not_a_number",
        {"content": b"{}", "headers": {HEADER: "x"}},
        400,
    ),
    (
        "v2",
        "binary_header_length_a_unicode_digit",  # "²".isdigit() is True, int("²") fails
        {"content": b"{}", "headers": {HEADER: "\u00b2".encode("latin-1")}},
        400,
    ),
    (
        "v2",
        "binary_header_length_5000_digits",  # int() refuses over 4,300 digits
        {"content": b"{}", "headers": {HEADER: "9" * 5000}},
        400,
    ),
    (
        "v2",
        "binary_data_short",
        {"content": BINARY_HEADER + b"\0" * 10, "headers": {HEADER: str(len(BINARY_HEADER))}},
        400,
    ),
    ("v1", "not_json", {"content": b"{not json", "headers": JSON}, 400),
    ("v1", "deep_nesting", {"content": DEEP, "headers": JSON}, 400),
    ("v1", "deep_nesting_in_instances", {"content": b'{"instances": ' + DEEP + b"}"}, 400),
    ("v1", "nan", {"content": b'{"instances": [NaN]}', "headers": JSON}, 400),
    ("v1", "not_an_object", {"json": "instances"}, 400),
    ("v1", "instances_not_a_list", {"json": {"instances": 5}}, 400),
    ("v1", "no_instances", {"json": {"instances": []}}, 400),
    ("v1", "rows_and_columns", {"json": {"instances": [], "inputs": []}}, 400),
    ("v1", "neither", {"json": {"signature_name": "serving_default"}}, 400),
    ("v1", "unknown_signature", {"json": {"signature_name": "x", "instances": [[0]]}}, 400),
    ("v1", "non_ascii_base64", {"json": {"instances": [{"b64": "\u0089"}]}}, 400),
    ("v1", "bad_padding", {"json": {"instances": [{"b64": _b64(GOOD)[:-1]}]}}, 400),
    ("v1", "base64_not_a_string", {"json": {"instances": [{"b64": 5}]}}, 400),
    ("v1", "wrong_shape", {"json": {"instances": [[[0, 0, 0]]]}}, 400),
    ("v1", "ragged", {"json": {"instances": [[[0, 0, 0], [0]]]}}, 400),
    ("v1", "pixels_not_integers", {"json": {"instances": [[[[0.5] * 3] * 32] * 32]}}, 400),
    ("v1", "a_string_instance", {"json": {"instances": ["image"]}}, 400),
    ("v1", "too_many_pixel_images", {"json": {"instances": [[[[0] * 3] * 32] * 32] * 5}}, 413),
    (
        "predict",
        "malformed_multipart",
        {
            "content": b"--zzz\r\nno headers, no end",
            "headers": {"content-type": "multipart/form-data; boundary=zzz"},
        },
        400,
    ),
    ("predict", "text_in_file_field", {"data": {"file": "not a file"}}, 422),
    ("predict", "no_file_field", {"data": {"something": "else"}}, 422),
    ("predict", "json_instead_of_a_form", {"json": {"file": "x"}}, 422),
    ("predict", "text_part", {"files": {"file": ("a.txt", b"plain words", "text/plain")}}, 415),
    ("predict", "empty_raw_body", {"content": b"", "headers": {"content-type": "image/png"}}, 400),
    (
        "predict",
        "text_raw_body",
        {"content": b"text", "headers": {"content-type": "image/png"}},
        400,
    ),
]
URLS = {"predict": "/predict", "v2": "/v2/models/tiny/infer", "v1": "/v1/models/tiny:predict"}


@pytest.mark.parametrize(
    "protocol,name,request_kwargs,status", BODY_ROWS, ids=[f"{r[0]}-{r[1]}" for r in BODY_ROWS]
)
def test_malformed_bodies_in_every_protocol(client, protocol, name, request_kwargs, status):
    r = client.post(URLS[protocol], **request_kwargs)
    assert_protocol_error(protocol, r, status)
    assert_still_serving(client, protocol)
