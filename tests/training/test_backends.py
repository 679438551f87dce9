"""The same training command on JAX; its weights evaluate and export under TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from training.cli import main
from training.run import load_run_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed"),
]


def test_train_on_jax_then_export_on_tensorflow(cifar_dir, tmp_path):
    run = tmp_path / "jax-run"
    argv = [
        "train",
        "--data",
        str(cifar_dir),
        "--run-dir",
        str(run),
        "--epochs",
        "1",
        "--internal-size",
        "32",
        "--batch-size",
        "16",
        "--val-fraction",
        "0.2",
        "--learning-rate",
        "0.01",
        "--warmup-epochs",
        "0",
        "--verbose",
        "0",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "training", *argv],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "history.json").read_text())["summary"]
    assert summary["backend"] == "jax" and summary["epochs_completed"] == 1
    model, _ = load_run_model(run)  # this process runs TensorFlow
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict_on_batch(x).sum(axis=1), 1.0, atol=1e-5)
    assert (
        main(
            [
                "export",
                "--run",
                str(run),
                "--models-dir",
                str(tmp_path / "models"),
                "--calibrate",
                "none",
            ]
        )
        == 0
    )
    assert (tmp_path / "models" / "cifar10-resnet50" / "1" / "saved_model.pb").is_file()
