"""Open Inference Protocol v2 (KServe/Triton), driven by the real ``tritonclient[http]``
against the real server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.helpers import CLASS_NAMES


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _predict_probs(server, image: np.ndarray) -> list[float]:
    r = httpx.post(f"{server.base}/predict", files={"file": ("x.png", _png(image), "image/png")})
    assert r.status_code == 200
    return [r.json()["probabilities"][c] for c in CLASS_NAMES]


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def test_health_metadata_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "7")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "labels"]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("resnet152")
    assert "not served here" in str(missing.value)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_tensor_gives_predicts_probabilities(client, server, binary):
    images = _images(3)
    tensor = triton.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("labels", binary_data=binary),
    ]
    result = client.infer("tiny", [tensor], outputs=outputs)
    probs = result.as_numpy("probabilities")
    assert probs.shape == (3, 10) and probs.dtype == np.float32
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("labels")]
    assert labels == [CLASS_NAMES[i] for i in probs.argmax(axis=1)]
    for image, row in zip(images, probs, strict=True):  # lossless PNG of the same pixels
        np.testing.assert_allclose(row, _predict_probs(server, image), atol=1e-5)


def test_encoded_images_as_bytes_are_decoded_like_uploads(client, server):
    images = _images(2, seed=5)
    blobs = np.array([_png(im) for im in images], dtype=np.object_)
    tensor = triton.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(blobs)
    result = client.infer("tiny", [tensor], model_version="1")  # default: binary output
    probs = result.as_numpy("probabilities")
    for image, row in zip(images, probs, strict=True):
        np.testing.assert_allclose(row, _predict_probs(server, image), atol=1e-5)
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"inputs": []}, 400, "exactly one input"),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [1, 8, 8, 3], "datatype": "UINT8", "data": [0]}
                ]
            },
            400,
            "shape [N, 32, 32, 3]",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": ["bm90IGFuIGltYWdl"],
                    }
                ]
            },
            400,
            "not a recognisable image",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [40, 32, 32, 3], "datatype": "UINT8", "data": []}
                ]
            },
            413,
            "limit",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "FP64", "data": [1]}]},
            400,
            "UINT8 or BYTES",
        ),
        (  # [N] or [N, 1] only
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 1, 1],
                        "datatype": "BYTES",
                        "data": ["iVBORw0KGgo="],
                    }
                ]
            },
            400,
            "shape [N] or [N, 1]",
        ),
        (  # as Triton answers an output asked for twice
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 32, 32, 3],
                        "datatype": "UINT8",
                        "data": [0] * 3072,
                    }
                ],
                "outputs": [
                    {"name": "labels"},
                    {"name": "probabilities"},
                    {"name": "labels", "parameters": {"binary_data": True}},
                ],
            },
            400,
            "output 'labels' already exists in request",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": [1e300]}
                ]
            },
            400,
            "integers 0-255",
        ),
    ],
)
def test_bad_requests_get_the_protocols_error_shape(server, body, status, fragment):
    r = httpx.post(f"{server.base}/v2/models/tiny/infer", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200  # still serving
