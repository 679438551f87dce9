"""The inference runtimes: OpenVINO and TensorFlow agree, and the runtime and precision are
chosen (or refused) as the README says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.cpu import has_fast_bf16
from app.model import ModelLoadError, load_served_model
from app.runtimes import INT8_DIR, resolve
from tests.helpers import ROOT


def _images(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_openvino_f32_gives_tensorflows_probabilities(tiny_model_root):
    tf_model = load_served_model(tiny_model_root, runtime="tensorflow")
    ov_model = load_served_model(tiny_model_root, runtime="openvino", precision="f32")
    assert (tf_model.runtime.name, ov_model.runtime.name) == ("tensorflow", "openvino")
    assert ov_model.input_size == tf_model.input_size == (32, 32)
    for n in (1, 5, 16):
        x = _images(n, seed=n)
        expected, got = tf_model.predict(x), ov_model.predict(x)
        assert got.shape == expected.shape == (n, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.skipif(not has_fast_bf16(), reason="this CPU has neither AVX512_BF16 nor AMX")
def test_openvino_bf16_stays_close_to_f32(tiny_model_root):
    f32 = load_served_model(tiny_model_root, runtime="openvino", precision="f32")
    bf16 = load_served_model(tiny_model_root, runtime="openvino", precision="bf16")
    assert bf16.runtime.precision == "bf16"
    x = _images(16)
    np.testing.assert_allclose(bf16.predict(x), f32.predict(x), atol=2e-2)


def test_openvino_streams_compute_at_once_and_answer_as_one_stream(tiny_model_root):
    """Two streams: two infer requests in a pool, calls from several threads at once, each
    answer the one-stream model's (and a third caller waits for a free stream)."""
    one = load_served_model(tiny_model_root, runtime="openvino", precision="f32")
    two = load_served_model(tiny_model_root, runtime="openvino", precision="f32", streams=2)
    assert (one.streams, two.streams) == (1, 2)
    assert two.describe()["streams"] == 2
    inputs = [_images(n, seed=n) for n in (1, 3, 16, 7, 16, 2)]
    expected = [one.predict(x) for x in inputs]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(two.predict, inputs * 4))
    for x, e, g in zip(inputs * 4, expected * 4, got, strict=True):
        assert g.shape == (len(x), 10)
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert two.runtime._requests.qsize() == 2  # every request went back to the pool
    assert load_served_model(tiny_model_root, runtime="tensorflow", streams=2).streams == 1


def test_an_openvino_compile_failure_is_a_one_line_load_error(tiny_model_root, monkeypatch):
    import openvino

    def refuse(self, *args, **kwargs):
        raise RuntimeError(
            "Exception from src/inference/src/cpp/core.cpp:109:\n[ CPU ] cannot allocate streams"
        )

    monkeypatch.setattr(openvino.Core, "compile_model", refuse)
    with pytest.raises(ModelLoadError) as err:
        load_served_model(tiny_model_root, runtime="openvino", precision="f32", streams=2)
    message = str(err.value)
    assert "\n" not in message and "OpenVINO cannot compile the f32 model" in message
    assert message.endswith("([ CPU ] cannot allocate streams)")


def test_warm_up_runs_one_thread_per_stream(tiny_model_root):
    model = load_served_model(tiny_model_root, runtime="openvino", precision="f32", streams=2)
    threads, lock = set(), threading.Lock()
    predict = model.runtime.predict

    def recording(images):
        with lock:
            threads.add(threading.current_thread().name)
        return predict(images)

    model.runtime.predict = recording
    model.warm_up(2, (1, 4))
    assert len(threads) == 2


def _card(tiny_model_root) -> dict:
    return json.loads((tiny_model_root / "1" / "model_card.json").read_text())


def test_auto_prefers_openvino_and_the_cpus_fastest_float(tiny_model_root):
    runtime, precision = resolve("auto", "auto", tiny_model_root / "1", _card(tiny_model_root))
    assert runtime == "openvino"
    assert precision == ("bf16" if has_fast_bf16() else "f32")  # no int8 in this version
    assert resolve("tensorflow", "auto", tiny_model_root / "1", {}) == ("tensorflow", "f32")


def test_auto_serves_int8_only_where_the_card_accepts_it(tmp_path, tiny_model_root):
    version = tmp_path / "1"
    shutil.copytree(tiny_model_root / "1", version)
    (version / INT8_DIR).mkdir()
    (version / INT8_DIR / "model.xml").write_text("<net/>")  # resolve() only looks for it
    card = _card(tiny_model_root)
    float_choice = "bf16" if has_fast_bf16() else "f32"
    assert resolve("auto", "auto", version, card)[1] == float_choice  # no measurement: no int8
    assert resolve("auto", "auto", version, {**card, "int8": {"accuracy_drop_pt": 0.06}}) == (
        "openvino",
        "int8",
    )
    too_lossy = {**card, "int8": {"accuracy_drop_pt": 0.31}}
    assert resolve("auto", "auto", version, too_lossy)[1] == float_choice


@pytest.mark.parametrize(
    "runtime,precision,message",
    [
        ("onnx", "auto", "unknown runtime 'onnx'"),
        ("auto", "fp8", "unknown precision 'fp8'"),
        ("openvino", "int8", "has no openvino-int8/model.xml"),
        ("tensorflow", "bf16", "precision 'bf16' needs the openvino runtime"),
    ],
)
def test_unservable_choices_are_refused_with_one_line(tiny_model_root, runtime, precision, message):
    with pytest.raises(ModelLoadError) as err:
        load_served_model(tiny_model_root, runtime=runtime, precision=precision)
    assert message in str(err.value) and "\n" not in str(err.value)


def _serve(argv: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from app.main import run; run()", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def test_serve_refuses_bad_configuration_with_one_line_and_status_1(tiny_model_root, tmp_path):
    bad_runtime = _serve(["--model-dir", str(tiny_model_root)], CIFAR10_RUNTIME="onnx")
    assert bad_runtime.returncode == 1
    last = bad_runtime.stderr.strip().splitlines()[-1]
    assert last.startswith("error: invalid setting: runtime:") and "'openvino'" in last
    small_queue = _serve(
        ["--model-dir", str(tiny_model_root)], CIFAR10_QUEUE_LIMIT="8", CIFAR10_MAX_FILES="32"
    )
    assert small_queue.returncode == 1
    assert small_queue.stderr.strip().splitlines()[-1] == (
        "error: invalid setting: queue_limit (8) must be at least max_files (32): a request of "
        "max_files images could never be queued"
    )
    pinned_poll = _serve(
        ["--model-dir", str(tiny_model_root), "--model-version", "1"], CIFAR10_MODEL_POLL_S="5"
    )
    assert pinned_poll.returncode == 1 and "exclude each other" in pinned_poll.stderr
    no_int8 = _serve(["--model-dir", str(tiny_model_root), "--precision", "int8"])
    assert no_int8.returncode == 1
    assert "has no openvino-int8/model.xml" in no_int8.stderr.strip().splitlines()[-1]
    # OpenVINO asked for where it cannot be imported (a stand-in package that fails to import)
    shadow = tmp_path / "shadow" / "openvino"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('openvino is not installed')\n")
    no_ov = _serve(
        ["--model-dir", str(tiny_model_root), "--runtime", "openvino"],
        PYTHONPATH=str(shadow.parent),
    )
    assert no_ov.returncode == 1
    assert "the openvino package is not installed" in no_ov.stderr.strip().splitlines()[-1]


def test_auto_falls_back_to_tensorflow_without_openvino(tiny_model_root, tmp_path):
    shadow = tmp_path / "shadow" / "openvino"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('openvino is not installed')\n")
    code = (
        "from app.model import load_served_model; import sys; "
        "m = load_served_model(sys.argv[1]); print(m.runtime.name, m.runtime.precision)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_root)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(shadow.parent)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["tensorflow", "f32"]
