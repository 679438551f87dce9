from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers import make_settings, wait_ready


@pytest.fixture(scope="module")
def client(tiny_model_root):
    app = create_app(make_settings(tiny_model_root, max_files=4, max_upload_bytes=200_000))
    with TestClient(app) as c:
        wait_ready(c)
        yield c
