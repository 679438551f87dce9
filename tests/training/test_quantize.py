"""``cifar10-model quantize``: an int8 OpenVINO copy beside the SavedModel, its accuracy in the
card, and the server loading it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app.model import load_served_model
from training.cli import main

pytestmark = pytest.mark.slow


def test_quantize_stores_int8_beside_the_savedmodel_and_measures_it(
    tiny_model_root, cifar_dir, tmp_path, capsys
):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root / "1", root / "1")
    argv = ["quantize", "--model", str(root / "1"), "--data", str(cifar_dir), "--images", "40"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (root / "1" / "openvino-int8" / "model.xml").is_file()
    card = json.loads((root / "1" / "model_card.json").read_text())
    int8 = card["int8"]
    assert int8["path"] == "openvino-int8/model.xml"
    assert int8["calibration"]["images"] == 40
    assert int8["test_images"] == 20  # the generated test batch, all of it
    assert int8["test_accuracy"] == printed["test_accuracy"]
    drop = round(100 * (int8["reference_test_accuracy"] - int8["test_accuracy"]), 2)
    assert int8["accuracy_drop_pt"] == drop
    assert 0 <= int8["top1_agreement_with_reference"] <= 1
    assert {"openvino", "nncf"} <= set(int8["libraries"])
    readme = (root / "1" / "README.md").read_text()  # the readable card, rewritten with it
    assert f"is an int8 OpenVINO copy ({int8['test_accuracy'] * 100:.2f} %" in readme
    assert "- openvino\n- int8\n" in readme  # tagged in the front matter

    # the server loads the int8 copy and it stays close to the float model
    int8_model = load_served_model(root, runtime="openvino", precision="int8")
    f32_model = load_served_model(root, runtime="openvino", precision="f32")
    assert int8_model.runtime.precision == "int8"
    x = np.random.default_rng(3).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(int8_model.predict(x), f32_model.predict(x), atol=0.05)

    assert main(argv) == 2  # exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
