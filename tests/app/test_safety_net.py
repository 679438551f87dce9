"""The last line of defence: an exception nobody expected (here, a model that raises) is a JSON
500 in the protocol's shape that names its request id, logged with the traceback and counted;
the server goes on serving. Every answer carries an X-Request-ID."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest

from app.api.error_examples import EXAMPLE_REQUEST_ID
from tests.helpers import documented_error, image_bytes

PNG = image_bytes()
REQUESTS = {
    "predict": {"url": "/predict", "files": {"file": ("a.png", PNG, "image/png")}},
    "v2": {
        "url": "/v2/models/tiny/infer",
        "json": {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(PNG).decode()],
                }
            ]
        },
    },
    "v1": {
        "url": "/v1/models/tiny:predict",
        "json": {"instances": [{"b64": base64.b64encode(PNG).decode()}]},
    },
}
ROUTES = {"predict": "/predict", "v2": "/v2/models/{name}/infer", "v1": "/v1/models/{name}:predict"}


class ModelBug(RuntimeError):
    pass


def _raise(images: np.ndarray) -> np.ndarray:
    raise ModelBug("the model's kernel crashed")


@pytest.mark.parametrize("protocol", REQUESTS)
def test_a_model_that_raises_gets_a_json_500_logged_with_its_request_id(client, caplog, protocol):
    batcher, model = client.app.state.batcher, client.app.state.model
    route = ROUTES[protocol]
    metric = f'http_unhandled_errors_total{{route="{route}"}}'
    before = _metric(client, metric)
    batcher.swap(_raise, model)  # the batcher's own way to change what computes a batch
    try:
        with caplog.at_level(logging.ERROR, logger="app.errors"):
            r = client.post(**REQUESTS[protocol])
    finally:
        batcher.swap(model.predict, model)
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["connection"] == "close"  # the request may have left its body unread
    request_id = r.headers["x-request-id"]
    message = r.json()["error"] if protocol != "predict" else r.json()["error"]["message"]
    if protocol == "predict":
        assert r.json()["error"]["code"] == "internal_error"
    else:
        assert set(r.json()) == {"error"}
    assert request_id in message and "kernel crashed" not in message  # no internals leak
    example = documented_error(client.get("/openapi.json").json(), "post", ROUTES[protocol], 500)
    assert r.json() == json.loads(json.dumps(example).replace(EXAMPLE_REQUEST_ID, request_id))
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and logged[0].exc_info[0] is ModelBug  # the traceback, with the id
    assert _metric(client, metric) == before + 1
    assert client.post(**REQUESTS[protocol]).status_code == 200  # serving goes on


def _metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_every_answer_carries_a_request_id(client):
    answers = [
        client.get("/health"),
        client.post(**REQUESTS["predict"]),
        client.get("/nope"),
        client.post("/v1/models/tiny:predict", content=b"{"),
        client.post(
            "/predict",
            content=b"x",
            headers={"content-type": "image/png", "content-length": str(10**9)},
        ),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 400, 413]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(len(i) == 16 for i in ids) and len(set(ids)) == len(ids)


def test_a_clients_sane_request_id_is_kept_and_any_other_replaced(client):
    kept = client.get("/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    for bad in ["has space", "x" * 200, "semi;colon", ""]:
        replaced = client.get("/health", headers={"X-Request-ID": bad})
        assert replaced.headers["x-request-id"] != bad
        assert len(replaced.headers["x-request-id"]) == 16
