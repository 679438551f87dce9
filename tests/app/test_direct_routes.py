"""The inference endpoints called past FastAPI's routing layers answer exactly as through
them: same route labels in the metrics, same errors, everything else passed on."""

from __future__ import annotations

import base64

import pytest

from app.api.direct import DirectRoutes
from app.api.main import routers
from app.main import DIRECT_PATHS
from tests.helpers import image_bytes

B64 = base64.b64encode(image_bytes()).decode()
BYTES_INPUT = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}


def _count(client, route: str, status: int) -> float:
    prefix = f'http_requests_total{{method="POST",route="{route}",status="{status}"}}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


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


def test_every_direct_path_is_a_declared_route():
    routes = DirectRoutes(routers, DIRECT_PATHS).routes
    assert {(m, r.path) for m, _, r in routes} == set(DIRECT_PATHS)
    with pytest.raises(ValueError, match="no such routes"):
        DirectRoutes(routers, [("POST", "/nowhere")])


def test_inference_paths_skip_fastapis_stack_but_not_the_services_middleware(tiny_model_root):
    """With FastAPI's own middleware stack broken, the inference paths still answer, with a
    request id and counted in the metrics; every other path goes through that stack."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.helpers import make_settings, wait_ready

    app = create_app(make_settings(tiny_model_root))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        before = _count(client, "/predict", 200)

        async def broken(scope, receive, send):
            raise RuntimeError("FastAPI's stack was used")

        fastapi_stack, app.middleware_stack = app.middleware_stack, broken
        try:
            r = client.post("/predict", files={"file": ("x.png", image_bytes(), "image/png")})
            assert r.status_code == 200 and r.headers["x-request-id"]
            assert client.get("/health").status_code == 500  # the broken stack raised
        finally:
            app.middleware_stack = fastapi_stack
        assert _count(client, "/predict", 200) == before + 1
