"""One request path: the inference endpoints are normal routes of the app (``DirectRoute``),
so routing, ``root_path``, middleware, error handlers and metrics labels are the same for every
request, and the error shape follows the matched route, not the raw path."""

from __future__ import annotations

import base64

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from app.api.direct import DirectRoute
from app.api.main import routers
from app.main import create_app
from tests.helpers import image_bytes, make_settings, wait_ready

PNG = image_bytes()
B64 = base64.b64encode(PNG).decode()
BYTES_INPUT = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}
INFERENCE_PATHS = {
    ("POST", "/predict"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/v1/models/{name}:predict"),
    ("POST", "/v1/models/{name}/versions/{version}:predict"),
}


def _count(client, route: str, status: int) -> float:
    prefix = f'http_requests_total{{method="POST",route="{route}",status="{status}"}}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_the_inference_endpoints_and_only_they_are_direct_routes():
    routes = [(m, r) for router in routers for r in router.routes for m in r.methods]
    assert {(m, r.path) for m, r in routes if isinstance(r, DirectRoute)} == INFERENCE_PATHS


def test_a_direct_route_refuses_dependencies_it_would_not_run():
    router = APIRouter(route_class=DirectRoute)

    async def needs_a_key(request, name: str): ...

    with pytest.raises(TypeError, match="takes no dependencies"):
        router.post("/x/{name}", dependencies=[Depends(lambda: None)])(needs_a_key)


def test_app_dependencies_that_direct_routes_would_skip_are_refused():
    from fastapi import FastAPI

    from app.api.direct import add_routes

    with pytest.raises(ValueError, match="would not run"):
        add_routes(FastAPI(dependencies=[Depends(lambda: None)]), routers)


@pytest.mark.parametrize(
    "url,route,body",
    [
        ("/v2/models/tiny/infer", "/v2/models/{name}/infer", BYTES_INPUT),
        (
            "/v2/models/tiny/versions/1/infer",
            "/v2/models/{name}/versions/{version}/infer",
            BYTES_INPUT,
        ),
        ("/v1/models/tiny:predict", "/v1/models/{name}:predict", {"instances": [{"b64": B64}]}),
        (
            "/v1/models/tiny/versions/1:predict",
            "/v1/models/{name}/versions/{version}:predict",
            {"instances": [{"b64": B64}]},
        ),
    ],
)
def test_direct_routes_keep_their_route_labels_and_path_parameters(client, url, route, body):
    before = _count(client, route, 200)
    assert client.post(url, json=body).status_code == 200
    assert _count(client, route, 200) == before + 1
    wrong = client.post(url.replace("tiny", "other"), json=body)
    assert wrong.status_code == 404 and "other" in wrong.json()["error"]


def test_other_methods_and_paths_pass_through(client):
    assert client.get("/predict").status_code == 405
    assert client.get("/v2/models/tiny").json()["name"] == "tiny"
    assert client.post("/v2/models/tiny/nothing", json={}).status_code == 404


@pytest.fixture(scope="module")
def under_api(tiny_model_root):
    """The app behind a proxy that mounts it at ``/api`` (uvicorn's ``--root-path /api``)."""
    app = create_app(make_settings(tiny_model_root, api_keys="k"))
    with TestClient(app, root_path="/api", headers={"X-API-Key": "k"}) as c:
        wait_ready(c)
        yield c


# (url under /api, body, whether errors are the protocols' {"error": "..."} shape)
UNDER_API = {
    "predict": ("/api/predict", {"files": {"file": ("a.png", PNG, "image/png")}}, False),
    "v2": ("/api/v2/models/tiny/infer", {"json": BYTES_INPUT}, True),
    "v1": ("/api/v1/models/tiny:predict", {"json": {"instances": [{"b64": B64}]}}, True),
}


@pytest.mark.parametrize("protocol", UNDER_API)
def test_behind_a_root_path_every_protocol_answers_and_errs_in_its_own_shape(under_api, protocol):
    url, good, protocol_shape = UNDER_API[protocol]
    route = {"predict": "/predict", "v2": "/v2/models/{name}/infer"}.get(
        protocol, "/v1/models/{name}:predict"
    )
    before = _count(under_api, route, 200)
    ok = under_api.post(url, **good)
    assert ok.status_code == 200, ok.text
    assert _count(under_api, route, 200) == before + 1  # labelled by its route, as without
    bad = under_api.post(url, content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code in (400, 422), bad.text
    too_big = under_api.post(
        url, content=b"x", headers={"content-type": "application/json", "content-length": "9" * 12}
    )
    assert too_big.status_code == 413
    no_key = under_api.post(url, **good, headers={"X-API-Key": ""})
    assert no_key.status_code == 401
    for answer in (bad, too_big, no_key):
        error = answer.json()["error"]
        assert isinstance(error, str) if protocol_shape else set(error) == {"code", "message"}
