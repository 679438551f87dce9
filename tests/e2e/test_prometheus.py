"""A real Prometheus (Debian's ``prometheus``) scrapes the real server with
``deploy/prometheus.yml``, pointed at the test's port: the target is up and
``http_requests_total`` counts the test's requests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest

from deploy.local_server import free_port
from tests.helpers import ROOT

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(server, tmp_path):
    if PROMETHEUS is None:
        if os.environ.get("REQUIRE_PROMETHEUS") == "1":
            pytest.fail("prometheus is required (apt-get install prometheus)")
        pytest.skip("prometheus not installed")
    config = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert '"api:8000"' in config and "scrape_interval: 15s" in config
    config = config.replace('"api:8000"', f'"127.0.0.1:{server.port}"')
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")  # a test's patience
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}"]
        + [f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        try:
            if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def _query(base: str, expr: str) -> list:
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return r.json()["data"]["result"]


def test_prometheus_scrapes_the_server_and_counts_requests(server, prometheus):
    sample = (ROOT / "samples" / "ship.png").read_bytes()

    def predict() -> None:
        r = httpx.post(
            f"{server.base}/predict", files={"file": ("s.png", sample, "image/png")}, timeout=30
        )
        assert r.status_code == 200

    predict()  # the counter's series exists from the first request on
    expr = 'sum(http_requests_total{job="cifar10-api",route="/predict",status="200"})'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the first scrape: target up, a baseline count
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
        active = targets["activeTargets"]
        if active and active[0]["health"] == "up" and _query(prometheus, expr):
            break
        time.sleep(0.5)
    assert active[0]["labels"]["job"] == "cifar10-api" and active[0]["health"] == "up"
    before = float(_query(prometheus, expr)[0]["value"][1])
    for _ in range(7):
        predict()
    counted = before
    while time.monotonic() < deadline and counted < before + 7:
        time.sleep(0.5)
        counted = float(_query(prometheus, expr)[0]["value"][1])
    assert counted == before + 7
    assert float(_query(prometheus, 'model_ready{job="cifar10-api"}')[0]["value"][1]) == 1
