"""What the tests share: generated official-format CIFAR batches, images, a tiny model, app
settings, a tiny training configuration, and the real server as a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deploy.local_server import free_port, http_ready, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]

CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``n`` images whose colour encodes the class, so a tiny model can learn them."""
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    x = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        x[i, :, :, label % 3] += np.uint8(20 * label)
    return x, labels


def smooth_photo(seed: int = 0) -> np.ndarray:
    """A smooth colour image (gradients plus noise), which JPEG can compress but not keep."""
    yy, xx = np.mgrid[0:32, 0:32]
    rng = np.random.default_rng(seed)
    base = np.stack([yy * 7, xx * 7, (yy + xx) * 3], axis=-1) + rng.integers(0, 40, (32, 32, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def write_cifar_dir(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """Write the official ``cifar-10-batches-py`` layout (protocol-2 pickles, bytes keys)."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(BATCH_NAMES):
        x, labels = make_batch(per_batch, seed + i)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072),
            b"filenames": [f"{name}_{j}.png".encode() for j in range(len(x))],
        }
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CLASS_NAMES]}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def write_cifar_tar(layout_dir: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(layout_dir, arcname="cifar-10-batches-py")
    return archive


def image_bytes(
    fmt: str = "PNG", size=(32, 32), mode: str = "RGB", color=(200, 30, 30), **save
) -> bytes:
    img = Image.new(mode, size, color if mode in ("RGB", "RGBA", "CMYK") else 128)
    if mode == "RGB":
        arr = np.asarray(img).copy()
        arr[: size[1] // 2] = (20, 40, 220)
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG whose header declares enormous dimensions (a decompression bomb)."""
    raw = image_bytes("PNG", size=(1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    start = raw.index(b"IHDR") - 4
    end = start + 4 + len(chunk) + 4
    return (
        raw[:start]
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + raw[end:]
    )


def build_tiny_contract_model(num_classes: int = 10):
    """A small Keras model with the real contract: uint8 [b, 32, 32, 3] → softmax [b, 10]."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def export_tiny_model(models_dir: Path, name: str = "tiny", version: int = 1) -> Path:
    """Export the tiny model with the project's real exporter and a minimal real card."""
    from training.export import build_card, write_export

    card = build_card(
        name=name,
        version=version,
        class_names=CLASS_NAMES,
        internal_size=32,
        tta_flip=False,
        weights_source="tiny test model",
        data={"source": "generated"},
        training={},
        metrics=None,
    )
    return write_export(build_tiny_contract_model(), models_dir, name, version, card)


def card_of(path: Path) -> dict:
    return json.loads((path / "model_card.json").read_text())


def make_settings(model_root: Path, **overrides):
    """Serving settings for the tiny model: one warm-up run, anything else overridden."""
    from app.config import Settings

    return Settings(model_dir=model_root, warmup_runs=1, **overrides)


def until(condition, timeout: float = 10) -> None:
    """Poll ``condition()`` until it is true (an assertion error after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.01)


def wait_ready(client, timeout: float = 30.0) -> None:
    """Poll an in-process ``TestClient`` until ``/health/ready`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("app never became ready")


def documented_error(document: dict, method: str, path: str, status: int | str) -> dict:
    """The example error body that the OpenAPI ``document`` gives ``method path`` for
    ``status`` (``path`` the document's template)."""
    responses = document["paths"][path][method.lower()]["responses"]
    return responses[str(status)]["content"]["application/json"]["example"]


def tiny_config(cifar_dir: Path, run_dir: Path, **overrides):
    """A few steps of the real ResNet50 at 32 px on the generated data."""
    from training.config import TrainConfig

    values = dict(
        data=str(cifar_dir),
        run_dir=str(run_dir),
        internal_size=32,
        epochs=1,
        batch_size=16,
        val_fraction=0.2,
        learning_rate=0.01,
        warmup_epochs=0,
        verbose=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def run_upload_forms(*args: str) -> subprocess.CompletedProcess:
    """``benchmarks/upload_forms.py`` with ``args``, as a user runs it from the repository."""
    return subprocess.run(
        [sys.executable, "benchmarks/upload_forms.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


class Server:
    """``python -m app`` as a subprocess on a free loopback port."""

    def __init__(self, model_root: Path, **env):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "CIFAR10_WARMUP_RUNS": "1",
            "CIFAR10_LOG_LEVEL": "info",
            **{f"CIFAR10_{k.upper()}": str(v) for k, v in env.items()},
        }
        argv = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(self.port)]
        # The log goes to a file: a pipe nobody reads would fill up and block the server.
        self._log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [*argv, "--model-dir", str(model_root)],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """Everything the server has printed so far."""
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        try:
            wait_until_ready(self.proc, http_ready(f"{self.base}/health/ready"), timeout, 0.2)
        except RuntimeError as exc:
            output = self.log() if self.proc.poll() is not None else ""
            raise AssertionError(f"{exc}: {output}") from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def one_request(port: int, body: bytes, content_type: str, path: str = "/predict") -> str:
    """One POST on a new connection: the status as text; ``refused`` when no connection was made
    (nothing listening); ``lost: ...`` when a connection was made but no answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.connect()  # refused, or no answer to the SYN (a container's forwarding, gone)
    except OSError:
        return "refused"
    conn.sock.settimeout(60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return f"lost: {exc!r}"
    finally:
        conn.close()


class Load:
    """``clients`` threads, each sending one request per new connection until ``stop()``: what a
    stop under load does to requests (``outcomes``: see ``one_request``)."""

    def __init__(self, port: int, body: bytes, content_type: str, clients: int = 16):
        self.outcomes: list[str] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._args = (port, body, content_type)
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self) -> None:
        while not self._stop.is_set():
            outcome = one_request(*self._args)
            with self._lock:
                self.outcomes.append(outcome)
            if outcome == "refused":
                time.sleep(0.05)

    def wait_for(self, answers: int, timeout: float = 120) -> None:
        until(lambda: sum(o.isdigit() for o in self.outcomes) >= answers, timeout)

    def stop(self) -> dict[str, list[str]]:
        """Stops the clients; the outcomes as ``answered``, ``lost`` and ``refused``."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=70)
        return {
            "answered": [o for o in self.outcomes if o.isdigit()],
            "lost": [o for o in self.outcomes if o.startswith("lost")],
            "refused": [o for o in self.outcomes if o == "refused"],
        }


def stop_ray_cluster(temp_dir: str, gcs_port: int) -> None:
    """End a Ray cluster's processes (not ``ray stop``, which ends every cluster on the
    machine): those naming its folder or its GCS port, and all under them; SIGTERM, then
    SIGKILL after 10 s."""
    import psutil

    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if _of_cluster(p.info["cmdline"] or [], temp_dir, gcs_port) and p.pid != os.getpid()
    ]
    procs = {q.pid: q for r in roots for q in [r, *_children(r)]}.values()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def _of_cluster(cmdline: list[str], temp_dir: str, gcs_port: int) -> bool:
    """A process of the cluster: it names the cluster's folder, or it is Ray's and names the
    cluster's GCS port."""
    if any(temp_dir in a for a in cmdline):
        return True
    return any("ray" in a for a in cmdline) and any(a.endswith(f":{gcs_port}") for a in cmdline)


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []
