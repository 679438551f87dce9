"""TensorFlow Serving's REST API, with request bodies shaped as in its REST documentation
(row format ``instances``, columnar ``inputs``, binary values as ``{"b64": ...}``)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.helpers import CLASS_NAMES, image_bytes


def _image(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (32, 32, 3), dtype=np.uint8).tolist()


def _predict_probs(client, png: bytes) -> list[float]:
    r = client.post("/predict", files={"file": ("x.png", png, "image/png")})
    return [r.json()["probabilities"][c] for c in CLASS_NAMES]


def test_version_status_and_metadata(client):
    r = client.get("/v1/models/tiny")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/tiny/versions/1").status_code == 200
    missing = client.get("/v1/models/tiny/versions/2")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    meta = client.get("/v1/models/tiny/metadata").json()
    assert meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["image"]["dtype"] == "DT_UINT8"
    assert [d["size"] for d in sig["inputs"]["image"]["tensor_shape"]["dim"]] == [
        "-1",
        "32",
        "32",
        "3",
    ]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"


def test_row_format_with_arrays_and_b64_images(client):
    png = image_bytes("PNG")
    arrays = [_image(1), _image(2)]
    # {"instances": [<value>, ...]} and {"signature_name": ..., "instances": [{"b64": ...}]}
    r = client.post("/v1/models/tiny:predict", json={"instances": arrays})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert np.asarray(predictions).shape == (2, 10)
    b64 = {
        "signature_name": "serving_default",
        "instances": [{"b64": base64.b64encode(png).decode()}],
    }
    r = client.post("/v1/models/tiny/versions/1:predict", json=b64)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0] == pytest.approx(_predict_probs(client, png), abs=1e-5)
    # named inputs inside each instance: {"instances": [{"image": <value>}, ...]}
    named = client.post(
        "/v1/models/tiny:predict", json={"instances": [{"image": a} for a in arrays]}
    )
    np.testing.assert_allclose(named.json()["predictions"], predictions, atol=1e-6)


def test_columnar_format(client):
    arrays = [_image(3), _image(4)]
    r = client.post("/v1/models/tiny:predict", json={"inputs": {"image": arrays}})
    assert r.status_code == 200, r.text
    rows = client.post("/v1/models/tiny:predict", json={"instances": arrays}).json()
    np.testing.assert_allclose(r.json()["outputs"], rows["predictions"], atol=1e-6)


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"instances": []}, 400, "no image"),
        ({"instances": [[1, 2, 3]]}, 400, "[32, 32, 3]"),
        # found by the schema fuzzer: a huge float overflowed the integer conversion (500)
        ({"instances": [[True, -1e-05, -4.937720589915988e152]]}, 400, "integers 0-255"),
        ({"instances": [np.full((32, 32, 3), 0.5).tolist()]}, 400, "integers 0-255"),
        ({"instances": [{"b64": "!!"}]}, 400, "not base64"),
        (
            {"instances": [{"b64": base64.b64encode(b"text").decode()}]},
            400,
            "not a recognisable image",
        ),
        ({"instances": [_image()] * 5}, 413, "limit"),  # the client fixture allows 4 files
        ({"signature_name": "other", "instances": [_image()]}, 400, "signature_name"),
        ({"instances": [_image()], "inputs": [_image()]}, 400, "either"),
        # found by the schema fuzzer: an explicit null was taken for an absent key
        ({"instances": [_image()], "inputs": None}, 400, "not null"),
    ],
)
def test_bad_requests_get_tf_servings_error_shape(client, body, status, fragment):
    r = client.post("/v1/models/tiny:predict", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]
    assert client.post("/v1/models/tiny:predict", json={"instances": [_image()]}).status_code == 200
