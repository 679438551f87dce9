"""Health, readiness, the model card, metrics, docs served without a CDN, queue limit."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.model import load_served_model
from tests.helpers import (
    CLASS_NAMES,
    documented_error,
    image_bytes,
    make_settings,
    until,
    wait_ready,
)


def test_liveness_and_readiness_follow_the_lifespan(tiny_model_root):
    app = create_app(make_settings(tiny_model_root))
    before = TestClient(app)  # not entered: the lifespan has not loaded the model
    assert before.get("/health").status_code == 200
    r = before.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "starting"
    r = before.get("/model")
    document = before.get("/openapi.json").json()
    assert r.status_code == 503 and r.json() == documented_error(document, "get", "/model", 503)
    assert (
        before.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")}).status_code
        == 503
    )
    with TestClient(app) as client:
        wait_ready(client)
        r = client.get("/health/ready")
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "model": {"name": "tiny", "version": 1}}
        assert "model_ready 1.0" in client.get("/metrics").text


def test_a_failed_warm_up_is_reported_not_hidden(tiny_model_root, monkeypatch):
    """Readiness says 'failed' and why; /predict answers 503 model_failed, not a hang."""
    model = load_served_model(tiny_model_root)

    def warm_up(*args):
        raise MemoryError("cannot allocate the model's buffers")

    monkeypatch.setattr(model, "warm_up", warm_up)
    with TestClient(create_app(make_settings(tiny_model_root), model=model)) as client:
        batcher = client.app.state.batcher

        async def warm_up_ended() -> None:  # runs on the app's own event loop
            await asyncio.wait_for(batcher.settled.wait(), 30)

        client.portal.call(warm_up_ended)
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "failed"
        assert "MemoryError: cannot allocate" in r.json()["detail"]
        r = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"
        assert "Retry-After" not in r.headers
        assert client.get("/health").status_code == 200  # the process itself is up


def test_model_card_endpoint(client):
    r = client.get("/model")
    assert r.status_code == 200
    card = r.json()
    assert card["class_names"] == CLASS_NAMES
    assert card["signature"]["input"]["dtype"] == "uint8"
    assert card["served"]["version"] == 1 and card["served"]["input_size"] == [32, 32]


def test_model_card_for_people_is_the_versions_readme(tiny_model_root, tmp_path):
    import shutil

    with TestClient(create_app(make_settings(tiny_model_root))) as client:
        wait_ready(client)
        r = client.get("/model/card")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
        assert r.text == (tiny_model_root / "1" / "README.md").read_text()
        assert r.text.startswith("---\n") and "# tiny, version 1" in r.text
        assert 'href="model/card"' in client.get("/").text  # the demo page links to it
    root = tmp_path / "models"
    shutil.copytree(tiny_model_root, root)
    (root / "1" / "README.md").unlink()  # a version exported before model cards had one
    with TestClient(create_app(make_settings(root))) as client:
        wait_ready(client)
        r = client.get("/model/card")
        assert r.status_code == 404
        assert r.json()["error"] == {
            "code": "not_found",
            "message": "version 1 has no README.md",
        }
        document = client.get("/openapi.json").json()
        assert r.json() == documented_error(document, "get", "/model/card", 404)
        assert client.get("/model").status_code == 200  # the JSON card is still served


def _metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_change_as_requests_arrive(client):
    before = client.get("/metrics").text
    n0 = _metric(before, "http_requests_total", route="/predict", status="200")
    b0 = _metric(before, "inference_batch_size_count")
    p0 = sum(_metric(before, "predictions_total", label=c) for c in CLASS_NAMES)
    for _ in range(3):
        assert (
            client.post(
                "/predict", files={"file": ("a.png", image_bytes(), "image/png")}
            ).status_code
            == 200
        )
    client.post("/predict", files={"file": ("a.png", b"", "image/png")})
    after = client.get("/metrics")
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _metric(text, "http_requests_total", route="/predict", status="200") == n0 + 3
    assert _metric(text, "http_requests_total", route="/predict", status="400") >= 1
    assert _metric(text, "inference_batch_size_count") >= b0 + 3
    assert sum(_metric(text, "predictions_total", label=c) for c in CLASS_NAMES) == p0 + 3
    assert _metric(text, "http_request_duration_seconds_count", route="/predict") >= n0 + 4
    served = client.get("/model").json()["served"]
    assert (
        f'model_info{{name="tiny",precision="{served["precision"]}",'
        f'runtime="{served["runtime"]}",streams="1",version="1"}} 1.0'
    ) in text
    for name in (
        "inference_queue_wait_seconds_count",
        "inference_queue_depth",
        "inference_duration_seconds_count",
        "process_resident_memory_bytes",
        'python_gc_collections_total{generation="0"}',
    ):
        assert re.search(rf"^{re.escape(name)}", text, re.M), name


def test_docs_and_redoc_are_served_without_a_cdn(client):
    for path in ("/docs", "/redoc"):
        html = client.get(path)
        assert html.status_code == 200
        assert not re.search(r"""(src|href)=["']https?://""", html.text), path
        for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", html.text):
            assert client.get(asset).status_code == 200, asset
            # nor do the scripts load anything from a CDN (ReDoc's bundle had a logo's address)
            assert b"cdn.redoc.ly" not in client.get(asset).content, asset
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "/metrics" in spec["paths"]
    # The upload form Swagger UI renders: 'file' and 'files' as binary, top_k as a query.
    post = spec["paths"]["/predict"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["file"]["contentMediaType"] == "application/octet-stream"
    assert form["files"]["items"]["contentMediaType"] == "application/octet-stream"
    assert [p["name"] for p in post["parameters"]] == ["top_k"]
    assert set(post["responses"]) >= {"200", "400", "413", "415", "422", "503"}


def test_protocol_bodies_are_declared_once_and_completed_with_the_served_model(tiny_model_root):
    """The routes declare each protocol's body for CIFAR-10's 32x32 input and the default limit;
    the served document is the same schema with this server's limit (max_files=5)."""
    app = create_app(make_settings(tiny_model_root, max_files=5))

    def bodies(spec: dict) -> tuple[dict, dict]:
        paths = spec["paths"]
        infer = paths["/v2/models/{name}/infer"]["post"]["requestBody"]
        predict = paths["/v1/models/{name}:predict"]["post"]["requestBody"]
        return (
            infer["content"]["application/json"]["schema"],
            predict["content"]["application/json"]["schema"],
        )

    declared_infer, declared_predict = bodies(app.openapi())  # no model loaded yet
    with TestClient(app) as client:
        wait_ready(client)
        served_infer, served_predict = bodies(client.get("/openapi.json").json())
    assert served_infer == declared_infer  # the tiny model's input is 32x32 too
    assert declared_infer["properties"]["inputs"]["items"]["oneOf"][1]["properties"]["shape"] == {
        "const": [1, 32, 32, 3]
    }
    assert declared_predict["properties"]["instances"]["maxItems"] == 32
    assert served_predict["properties"]["instances"]["maxItems"] == 5
    served_predict["properties"]["instances"]["maxItems"] = 32
    served_predict["properties"]["inputs"]["anyOf"][0]["maxItems"] = 32
    served_predict["properties"]["inputs"]["anyOf"][1]["properties"]["image"]["maxItems"] = 32
    assert served_predict == declared_predict  # nothing else differs


def test_full_queue_answers_503_with_retry_after(tiny_model_root):
    app = create_app(make_settings(tiny_model_root, queue_limit=2, max_files=2))
    with TestClient(app) as client:
        wait_ready(client)
        batcher, model = client.app.state.batcher, client.app.state.model
        gate = threading.Event()

        def gated(images):
            gate.wait(10)
            return model.predict(images)

        files = [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(2)]
        batcher.swap(gated, model)
        first = threading.Thread(target=client.post, args=("/predict",), kwargs={"files": files})
        queued = threading.Thread(target=client.post, args=("/predict",), kwargs={"files": files})
        try:
            first.start()  # computed, once the gate opens
            until(lambda: batcher._calls)
            queued.start()  # fills the queue
            until(lambda: batcher._waiting_images == 2)
            r = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")})
        finally:
            gate.set()
            first.join(10)
            queued.join(10)
            batcher.swap(model.predict, model)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        document = client.get("/openapi.json").json()
        assert r.json() == documented_error(document, "post", "/predict", 503)
        assert "inference_rejected_total 1.0" in client.get("/metrics").text
        ok = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")})
        assert ok.status_code == 200


def test_settings_that_cannot_work_together_are_refused(tiny_model_root):
    with pytest.raises(ValueError, match=r"queue_limit \(1\) must be at least max_files \(2\)"):
        make_settings(tiny_model_root, queue_limit=1, max_files=2)
    with pytest.raises(ValueError, match="exclude each other"):
        make_settings(tiny_model_root, model_poll_s=1, model_version=1)
    assert make_settings(tiny_model_root, queue_limit=2, max_files=2).queue_limit == 2


def test_api_keys_guard_inference_and_leave_operations_open(tiny_model_root):
    app = create_app(make_settings(tiny_model_root, api_keys="k-one, k-two"))
    png = {"file": ("a.png", image_bytes(), "image/png")}
    with TestClient(app) as client:
        wait_ready(client)
        missing = client.post("/predict", files=png)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/predict", files=png, headers={"Authorization": "Bearer k-three"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
        for headers in (
            {"Authorization": "Bearer k-one"},
            {"X-API-Key": "k-two"},
            {"X-API-Key": "", "Authorization": "Bearer k-one"},  # an empty header hides nothing
            {"X-API-Key": "k-three", "Authorization": "Bearer k-two"},  # either valid one
        ):
            assert client.post("/predict", files=png, headers=headers).status_code == 200, headers
        empty = client.post("/predict", files=png, headers={"X-API-Key": " "})
        assert empty.status_code == 401 and "needs an API key" in empty.json()["error"]["message"]
        for path in ("/health", "/health/ready", "/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        # Swagger UI's Authorize button: both schemes declared, /predict requires one of them
        spec = client.get("/openapi.json").json()
        assert set(spec["components"]["securitySchemes"]) == {"BearerAuth", "APIKeyHeader"}
        post = spec["paths"]["/predict"]["post"]
        assert post["security"] == [{"BearerAuth": []}, {"APIKeyHeader": []}]
        assert "401" in post["responses"]
        assert "security" not in spec["paths"]["/health"]["get"]


def _protected_requests(model: str, version: int) -> dict[str, dict]:
    """One valid request to every route behind the keys: each protocol's inference paths
    (with and without a version) and the model card."""
    png = image_bytes()
    b64 = base64.b64encode(png).decode()
    v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    v1 = {"instances": [{"b64": b64}]}
    return {
        "predict": {"method": "POST", "url": "/predict", "files": {"file": ("a.png", png)}},
        "v2": {"method": "POST", "url": f"/v2/models/{model}/infer", "json": v2},
        "v2 version": {
            "method": "POST",
            "url": f"/v2/models/{model}/versions/{version}/infer",
            "json": v2,
        },
        "v1": {"method": "POST", "url": f"/v1/models/{model}:predict", "json": v1},
        "v1 version": {
            "method": "POST",
            "url": f"/v1/models/{model}/versions/{version}:predict",
            "json": v1,
        },
        "model": {"method": "GET", "url": "/model"},
        "model card": {"method": "GET", "url": "/model/card"},
    }


def test_api_keys_guard_every_inference_route_and_the_model_card(tiny_model_root):
    app = create_app(make_settings(tiny_model_root, api_keys="k-one, k-two"))
    with TestClient(app) as client:
        wait_ready(client)
        spec = client.get("/openapi.json").json()
        templates = {
            "predict": ("post", "/predict"),
            "v2": ("post", "/v2/models/{name}/infer"),
            "v2 version": ("post", "/v2/models/{name}/versions/{version}/infer"),
            "v1": ("post", "/v1/models/{name}:predict"),
            "v1 version": ("post", "/v1/models/{name}/versions/{version}:predict"),
            "model": ("get", "/model"),
            "model card": ("get", "/model/card"),
        }
        for name, request in _protected_requests("tiny", 1).items():
            refused = client.request(**request)
            assert refused.status_code == 401, (name, refused.text)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json() == documented_error(spec, *templates[name], 401), name
            for headers in (
                {"Authorization": "Bearer k-one"},
                {"X-API-Key": "k-two"},
                {"X-API-Key": "", "Authorization": "Bearer k-one"},
                {"X-API-Key": "k-three", "Authorization": "Bearer k-two"},
            ):
                ok = client.request(**request, headers=headers)
                assert ok.status_code == 200, (name, headers, ok.text)
            template = {"model": "/model", "model card": "/model/card"}.get(name)
            if template:
                operation = spec["paths"][template]["get"]
                assert operation["security"] == [{"BearerAuth": []}, {"APIKeyHeader": []}]
        card = client.get("/model", headers={"X-API-Key": "k-one"}).json()
        assert card["served"]["path"] == f"{tiny_model_root.name}/1"
        assert str(tiny_model_root) not in json.dumps(card)  # no path of the serving host


def test_the_model_card_names_no_absolute_path(tiny_model_root, tmp_path):
    """Paths of the machine that made the model (its data and run folders) are cut to their
    last component in both cards; API paths and relative paths stay."""
    import shutil

    root = tmp_path / "models"
    shutil.copytree(tiny_model_root, root)
    card_path = root / "1" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["data"] = {"source": "/var/tmp/cifar10-data/cifar-10-batches-py"}
    card["reproduce"] = {
        "train": "cifar10-model train --data /root/data/cifar --run-dir /var/tmp/runs/v9",
        "serve": "curl http://localhost:8000/v2/models/tiny/infer; ls models/tiny/1",
    }
    card_path.write_text(json.dumps(card))
    readme = root / "1" / "README.md"
    readme.write_text(readme.read_text() + "\nTrained from `/home/ml/cifar10-data` on /tmp/x.\n")
    with TestClient(create_app(make_settings(root))) as client:
        wait_ready(client)
        served = client.get("/model").json()
        text = client.get("/model/card").text
    assert served["data"]["source"] == "cifar-10-batches-py"
    assert served["reproduce"]["train"] == "cifar10-model train --data cifar --run-dir v9"
    assert served["reproduce"]["serve"] == card["reproduce"]["serve"]  # nothing to cut there
    assert "Trained from `cifar10-data` on x." in text
    for answer in (json.dumps(served), text):
        assert not re.search(r"(?<![\w:/])/(var|root|home|tmp)/", answer), answer


def test_without_api_keys_nothing_asks_for_one(client):
    r = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")})
    assert r.status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


@pytest.mark.parametrize(("level", "access_log"), [("info", True), ("warning", False)])
def test_access_lines_are_logged_at_info_and_not_prepared_above_it(
    tiny_model_root, monkeypatch, level, access_log
):
    from app.graceful import GracefulServer
    from app.main import run

    given = {}

    def serve_nothing(server, sockets=None):
        given["config"], server.started = server.config, True

    monkeypatch.setattr(GracefulServer, "run", serve_nothing)
    monkeypatch.setenv("CIFAR10_LOG_LEVEL", level)
    run(["--model-dir", str(tiny_model_root), "--runtime", "openvino", "--precision", "f32"])
    config = given["config"]
    assert config.access_log is access_log and config.log_level == level
    assert config.timeout_graceful_shutdown == 30.0  # CIFAR10_SHUTDOWN_TIMEOUT_S's default
