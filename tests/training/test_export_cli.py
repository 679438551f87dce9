"""Export → SavedModel → same outputs; the model card; evaluate; the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import CLASS_NAMES
from training.calibration import apply_temperature
from training.cli import main
from training.run import load_run_model

pytestmark = pytest.mark.slow


def test_export_reloads_with_same_outputs_and_a_full_card(trained_run, cifar_dir, tmp_path, capsys):
    models = tmp_path / "models"
    argv = [
        "export",
        "--run",
        str(trained_run),
        "--models-dir",
        str(models),
        "--name",
        "c10",
        "--data",
        str(cifar_dir),
        "--tta-flip",
    ]
    assert main(argv) == 0
    version_dir = models / "c10" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    readme = (version_dir / "README.md").read_text()  # the model card people read
    for png in ("learning_curves.png", "confusion_matrix_test.png"):
        assert (version_dir / png).is_file() and f"]({png})" in readme
    assert readme.startswith("---\nlicense: ") and "# c10, version 1" in readme

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert set(signature.structured_outputs) == {"probabilities"}
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    exported = signature(image=tf.constant(x))["probabilities"].numpy()
    keras_model, _ = load_run_model(trained_run, tta_flip=True)
    temperature = json.loads((version_dir / "model_card.json").read_text())["calibration"][
        "temperature"
    ]
    expected = apply_temperature(keras_model.predict_on_batch(x), temperature)
    np.testing.assert_allclose(exported, expected, atol=1e-5)

    card = json.loads((version_dir / "model_card.json").read_text())
    assert card["class_names"] == CLASS_NAMES and card["version"] == 1
    assert card["signature"]["input"] == {
        "name": "image",
        "dtype": "uint8",
        "shape": [None, 32, 32, 3],
        "layout": "NHWC RGB 0..255",
    }
    assert card["internal_size"] == 32 and card["tta_flip"] is True
    assert card["weights_source"] == "none (random initialization)"
    assert len(card["data"]["sha256"]) == 64
    assert card["training"]["config"]["epochs"] == 1
    (session,) = card["training"]["summary"]["sessions"]  # where and when it trained
    # one epoch: its seconds are the median, and the card people read estimates from it
    (epoch,) = json.loads((trained_run / "history.json").read_text())["epochs"]
    median = card["training"]["summary"]["median_epoch_s"]
    assert median == round(epoch["seconds"], 1)
    assert f"The median epoch took {median:.0f} s" in readme
    assert session["last_epoch"] == 1 and session["hardware"]["cores"] == os.cpu_count()
    assert 0 <= card["metrics"]["test"]["accuracy"] <= 1
    assert "test_plain_accuracy" in card["metrics"]
    assert {"tensorflow", "keras", "numpy"} <= set(card["libraries"])
    assert card["created"]

    # every weight is stored once: the checkpoint holds about as many floats as the model has
    # parameters (the export used to write each twice, under two names)
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    stored = sum(
        int(np.prod(shape))
        for name, shape in reader.get_variable_to_shape_map().items()
        if name.endswith("VARIABLE_VALUE")
    )
    params = keras_model.count_params()
    assert params <= stored < 1.01 * params
    data_bytes = sum(f.stat().st_size for f in (version_dir / "variables").glob("variables.data*"))
    assert data_bytes < 1.05 * 4 * params

    assert main(argv[:-3] + ["--data", str(cifar_dir)]) == 0  # next free version
    assert (models / "c10" / "2").is_dir()
    capsys.readouterr()
    assert main(argv + ["--version", "1"]) == 2
    assert "version already exists" in capsys.readouterr().err


def test_evaluate_saved_model_and_run_agree(trained_run, cifar_dir, tmp_path, capsys):
    models = tmp_path / "models"
    assert (
        main(
            [
                "export",
                "--run",
                str(trained_run),
                "--models-dir",
                str(models),
                "--calibrate",
                "none",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "report.json"
    png = tmp_path / "cm.png"
    assert (
        main(
            [
                "evaluate",
                "--saved-model",
                str(models / "cifar10-resnet50" / "1"),
                "--data",
                str(cifar_dir),
                "--out",
                str(out),
                "--confusion-png",
                str(png),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    assert printed["accuracy"] == report["accuracy"] and report["images"] == 20
    assert np.array(report["confusion_matrix"]).sum() == 20
    assert set(report["per_class"]) == set(CLASS_NAMES) and png.stat().st_size > 0
    assert main(["evaluate", "--run", str(trained_run), "--data", str(cifar_dir)]) == 0
    from_run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_run["accuracy"] == pytest.approx(report["accuracy"])
    assert (
        main(["evaluate", "--run", str(trained_run), "--data", str(cifar_dir), "--split", "val"])
        == 0
    )


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_help_and_one_line_errors(tmp_path):
    help_ = _cli("train", "--help")
    assert (
        help_.returncode == 0 and "--size-schedule" in help_.stdout and "--resume" in help_.stdout
    )
    bad = _cli("train", "--epochs", "0", "--run-dir", str(tmp_path / "r"))
    assert (
        bad.returncode == 2
        and bad.stderr.strip().splitlines()[-1] == "error: epochs must be at least 1"
    )
    missing = _cli("train", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r"))
    assert missing.returncode == 2
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path / 'nope'}: no such file or directory"
    )
    usage = _cli("train", "--epochs", "many")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr
    stem = _cli("train", "--stem", "tiny")
    assert stem.returncode == 2 and "invalid choice: 'tiny'" in stem.stderr


def test_resume_refuses_flags_it_would_ignore(tmp_path):
    """``--resume`` continues the saved configuration: a flag that would change the run is
    refused in one line instead of silently ignored; where the data and the run are, and a new
    time budget, are taken."""
    from training.cli import build_parser, resolve_train_config
    from training.config import ConfigError, TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = TrainConfig(run_dir=str(run_dir), epochs=7, data=str(tmp_path / "old"))
    (run_dir / "config.json").write_text(json.dumps(saved.to_dict()))
    parser = build_parser()

    def resolve(*flags):
        return resolve_train_config(
            parser.parse_args(["train", "--resume", "--run-dir", str(run_dir), *flags])
        )

    with pytest.raises(ConfigError) as refused:
        resolve("--epochs", "9", "--learning-rate", "0.5")
    assert str(refused.value) == (
        f"--resume continues {run_dir / 'config.json'}; it would ignore --epochs, --learning-rate "
        "(drop them, or start a new --run-dir)"
    )
    with pytest.raises(ConfigError, match="ignore --config"):
        resolve("--config", str(run_dir / "config.json"))
    moved = resolve("--data", str(tmp_path / "new"), "--time-budget-min", "5")
    assert moved.epochs == 7 and moved.data == str(tmp_path / "new") and moved.time_budget_min == 5
    assert resolve().epochs == 7
