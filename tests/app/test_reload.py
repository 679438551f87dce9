"""Zero-downtime version reload: a version copied in while clients upload is loaded, warmed up
and swapped in without a failed request; a broken version leaves the old one serving."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref

from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers import image_bytes, make_settings


def _wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_new_version_swaps_in_while_clients_upload(tmp_path, tiny_model_root):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root / "1", root / "1")
    app = create_app(make_settings(root, model_poll_s=0.1))
    png = image_bytes("PNG")
    answers: list[tuple[int, int | None]] = []
    stop = threading.Event()

    with TestClient(app) as client:
        assert _wait_for(lambda: client.get("/health/ready").status_code == 200)
        old = weakref.ref(app.state.model)

        def upload() -> None:
            while not stop.is_set():
                r = client.post("/predict", files={"file": ("a.png", png, "image/png")})
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                answers.append((r.status_code, version))

        clients = [threading.Thread(target=upload) for _ in range(4)]
        for t in clients:
            t.start()
        try:
            assert _wait_for(lambda: len(answers) >= 20)
            shutil.copytree(tiny_model_root / "1", root / "2")  # a new version arrives
            assert _wait_for(lambda: any(v == 2 for _, v in answers[-4:])), "never switched"
            n = len(answers)
            assert _wait_for(lambda: len(answers) >= n + 20)
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=60)
        assert all(status == 200 for status, _ in answers), {s for s, _ in answers}
        versions = [v for _, v in answers]
        first_new = versions.index(2)
        assert set(versions[:first_new]) == {1} and versions[-10:] == [2] * 10
        served = client.get("/model").json()["served"]
        assert served["version"] == 2 and served["reload"]["last_failure"] is None
        assert 'model_reloads_total{result="success"} 1.0' in client.get("/metrics").text
        gc.collect()
        assert old() is None, "the old model is still referenced"


def test_a_broken_version_leaves_the_old_one_serving(tmp_path, tiny_model_root):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root / "1", root / "1")
    app = create_app(make_settings(root, model_poll_s=0.1))
    with TestClient(app) as client:
        assert _wait_for(lambda: client.get("/health/ready").status_code == 200)
        shutil.copytree(tiny_model_root / "1", root / "3")
        (root / "3" / "saved_model.pb").write_bytes(b"\0broken")
        assert _wait_for(lambda: app.state.reloader.failure is not None)
        r = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["model"]["version"] == 1
        failure = client.get("/model").json()["served"]["reload"]["last_failure"]
        assert failure["version"] == 3 and "cannot load SavedModel" in failure["error"]
        status = client.get("/v1/models/tiny").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE"), ("3", "END")]
        assert "cannot load SavedModel" in status[1]["status"]["error_message"]
        assert 'model_reloads_total{result="failure"} 1.0' in client.get("/metrics").text
        # the version is fixed in place: tried again, because its contents changed
        shutil.copy2(tiny_model_root / "1" / "saved_model.pb", root / "3" / "saved_model.pb")
        assert _wait_for(lambda: app.state.model.version == 3)
        assert client.get("/model").json()["served"]["reload"]["last_failure"] is None
