from __future__ import annotations

import pytest

from tests.helpers import Server


@pytest.fixture(scope="module")
def server(tiny_model_root):
    s = Server(tiny_model_root)
    s.wait_ready()
    yield s
    s.stop()
