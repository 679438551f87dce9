"""``app.ray_serve``'s own logic, without a cluster (Ray installed: CI requires it): the
replicas' settings from the config's ``args``, and a replica's start that waits for the model's
warm-up (or fails with it). The live cluster: ``tests/e2e/test_ray_serve.py``."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

if os.environ.get("REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")

from app.main import create_app  # noqa: E402
from app.ray_serve import _for_serve, serve_settings  # noqa: E402
from tests.helpers import make_settings  # noqa: E402


def test_the_newest_version_is_pinned_once_for_every_replica(tiny_model_root, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root, root)
    shutil.copytree(root / "1", root / "7")
    assert serve_settings({"model_dir": str(root), "model_version": None}) == {
        "model_dir": str(root),
        "model_version": 7,
    }
    assert serve_settings({"model_dir": str(root), "model_version": 1})["model_version"] == 1
    # replicas that poll for new versions are not pinned (the settings would refuse both)
    polling = serve_settings({"model_dir": str(root), "model_poll_s": 5})
    assert "model_version" not in polling
    with pytest.raises(ValueError, match="is not a folder"):
        serve_settings({"model_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="max_batch_size"):
        serve_settings({"model_dir": str(root), "max_batch_size": 0})


def _startup(app) -> list[dict]:
    """The lifespan's startup as Serve runs it: the messages the replica's app sends (the
    first is the answer to the startup)."""
    sent = []
    incoming = [{"type": "lifespan.startup"}]

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # (no shutdown here)

    async def send(message):  # (with whether the model was warm when it was sent)
        sent.append({**message, "warm": app.state.batcher.ready.is_set()})

    async def run():
        task = asyncio.create_task(_for_serve(app)({"type": "lifespan"}, receive, send))
        while not sent:
            await asyncio.sleep(0.01)
        app.state.batcher and await app.state.batcher.close(5)
        task.cancel()

    asyncio.run(run())
    return sent


def test_a_replica_starts_once_its_model_is_warm(tiny_model_root):
    app = create_app(make_settings(tiny_model_root))
    message = _startup(app)[0]
    assert message["type"] == "lifespan.startup.complete" and message["warm"]


def test_a_replica_whose_warm_up_fails_fails_its_start(tiny_model_root, monkeypatch):
    from app.model import ServedModel

    def failing(*args, **kwargs):
        raise RuntimeError("no memory for the model")

    monkeypatch.setattr(ServedModel, "warm_up", failing)
    app = create_app(make_settings(tiny_model_root))
    message = _startup(app)[0]
    assert message["type"] == "lifespan.startup.failed"
    assert "no memory for the model" in message["message"]
