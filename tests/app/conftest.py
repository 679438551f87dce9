from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def make_settings(model_root, **overrides) -> Settings:
    return Settings(model_dir=model_root, warmup_runs=1, **overrides)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("app never became ready")


@pytest.fixture(scope="module")
def client(tiny_model_root):
    app = create_app(make_settings(tiny_model_root, max_files=4, max_upload_bytes=200_000))
    with TestClient(app) as c:
        wait_ready(c)
        yield c
