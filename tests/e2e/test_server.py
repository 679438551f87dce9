"""The real server, as users run it: a subprocess on a port, real multipart clients, SIGTERM."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import CLASS_NAMES, ROOT, Server

CAT = ROOT / "samples" / "cat.png"


def test_upload_with_a_real_multipart_client(server):
    with CAT.open("rb") as f:
        r = httpx.post(
            f"{server.base}/predict", files={"file": ("cat.png", f, "image/png")}, timeout=30
        )
    assert r.status_code == 200
    assert r.json()["label"] in CLASS_NAMES and r.json()["model"]["version"] == 1
    bad = httpx.post(
        f"{server.base}/predict", files={"file": ("x.png", b"nope", "image/png")}, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
    assert httpx.get(f"{server.base}/health", timeout=5).json() == {"status": "ok"}


def documented_curl_commands() -> list[str]:
    """Every ``curl`` line of the README and of the pages in docs/."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        line.strip()
        for page in pages
        for line in page.read_text().splitlines()
        if line.strip().startswith("curl ")
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_documented_curl_examples_work_verbatim(server):
    """Every curl line of the README and docs/, run by bash against the real server (model
    'tiny')."""
    commands = documented_curl_commands()
    assert sum("/predict" in c for c in commands) >= 2 and any("/v2/" in c for c in commands)
    assert any(":predict" in c for c in commands)
    for command in commands:
        command = command.replace("http://localhost:8000", server.base)
        command = command.replace("/cifar10-resnet50", "/tiny")
        proc = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, (command, proc.stderr)
        if command.endswith("/model/card"):  # the model card people read: Markdown
            assert proc.stdout.startswith("---\n") and "# tiny, version 1" in proc.stdout
            continue
        body = json.loads(proc.stdout)
        assert "error" not in body, (command, body)
        if "label" in body or "results" in body:
            labels = [body["label"]] if "label" in body else [r["label"] for r in body["results"]]
            assert labels and all(label in CLASS_NAMES for label in labels), command
        elif "predictions" in body:
            assert len(body["predictions"][0]) == len(CLASS_NAMES), command
        elif "model_name" in body:  # an Open Inference Protocol answer
            assert body["outputs"][0]["data"][0] in CLASS_NAMES, command
        else:  # metadata, health and readiness of the protocols
            assert (
                body.get("name") in ("tiny", "CIFAR-10 ResNet50 classifier")
                or body.get("model_spec", {}).get("name") == "tiny"
                or body.get("live") is True
                or body.get("ready") is True
                or body["model_version_status"][0]["state"] == "AVAILABLE"
            ), command


def _in_flight(server: Server) -> float:
    """Requests being handled now, besides this one (from the server's own gauge)."""
    text = httpx.get(f"{server.base}/metrics", timeout=5).text
    value = re.search(r"^http_requests_in_flight (\S+)$", text, re.M).group(1)
    return float(value) - 1


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly(tiny_model_root):
    # twelve 6.8 MB uploads at once: a body budget that holds them all (the default, 64 MiB,
    # answers some 503, which is not what this test is about)
    s = Server(tiny_model_root, max_batch_wait_ms=20, max_buffered_bytes=256 * 2**20)
    s.wait_ready()
    big = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, format="PNG")
    payload = big.getvalue()
    outcomes: list[tuple[str, float]] = []

    def client():
        try:
            r = httpx.post(
                f"{s.base}/predict", files={"file": ("n.png", payload, "image/png")}, timeout=60
            )
            outcomes.append((str(r.status_code), time.monotonic()))
        except httpx.ConnectError:
            outcomes.append(("refused", time.monotonic()))
        except httpx.RemoteProtocolError as exc:
            # a connection accepted but whose request had not started is closed unanswered:
            # nothing was processed, the client may retry
            assert "without sending a response" in str(exc)
            outcomes.append(("not started", time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    # SIGTERM once requests are in flight (the metrics middleware counts them as they start)
    deadline = time.monotonic() + 30
    while _in_flight(s) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _in_flight(s) >= 2, "no request ever reached the server"
    sent = time.monotonic()
    code = s.stop()
    for t in threads:
        t.join(timeout=60)
    statuses = [o for o, _ in outcomes]
    # uvicorn drains, runs the lifespan shutdown, then re-raises the SIGTERM it caught
    log = s.log()
    assert code in (0, -signal.SIGTERM), log
    assert "Traceback" not in log and "Application shutdown complete" in log
    # uvicorn[standard]'s fast parts are in use: uvloop's event loop (httptools shows in profiles)
    assert "event loop uvloop.Loop" in log, log
    assert len(outcomes) == 12
    assert set(statuses) <= {"200", "refused", "not started"}, statuses  # none cut half-way
    assert any(status == "200" and at > sent for status, at in outcomes), outcomes


def test_behind_a_proxy_that_strips_a_root_path_every_protocol_keeps_its_shape(tiny_model_root):
    """``CIFAR10_ROOT_PATH=/api`` (uvicorn's ``--root-path``): a proxy serves the app under
    ``/api`` and strips it. Every protocol answers, and errs in its own shape; the OpenAPI
    document names the prefix."""
    import base64

    server = Server(tiny_model_root, root_path="/api")
    try:
        server.wait_ready()
        png = CAT.read_bytes()
        b64 = base64.b64encode(png).decode()
        v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
        good = {
            "/predict": {"files": {"file": ("cat.png", png, "image/png")}},
            "/v2/models/tiny/infer": {"json": v2},
            "/v1/models/tiny:predict": {"json": {"instances": [{"b64": b64}]}},
        }
        for path, request in good.items():
            ok = httpx.post(server.base + path, timeout=30, **request)
            assert ok.status_code == 200, (path, ok.text)
            bad = httpx.post(
                server.base + path,
                content=b"{",
                timeout=30,
                headers={"content-type": "application/json"},
            )
            assert 400 <= bad.status_code < 500, (path, bad.text)
            error = bad.json()["error"]
            if path == "/predict":
                assert set(error) == {"code", "message"}, bad.text
            else:
                assert isinstance(error, str), (path, bad.text)
        spec = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
        assert spec["servers"] == [{"url": "/api"}]
    finally:
        server.stop()
