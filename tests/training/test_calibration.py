"""Calibrated probabilities: the measures, the fitted temperature, the calibrated graph that
``export`` and ``calibrate`` write, and the int8 copy that keeps its head in float."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest

from app.cpu import has_fast_bf16
from app.model import load_served_model
from app.runtimes import INT8_DIR
from tests.helpers import card_of
from training.calibration import (
    apply_temperature,
    calibrate_served_model,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from training.cli import main
from training.config import ConfigError
from training.data import load_cifar10, split_validation
from training.evaluate import predict, saved_model_predictor
from training.model import wrap_for_input
from training.quantize import float_layers, head_and_after
from training.recalibrate import reproduce_commands, source_variants
from training.run import load_run_classifier, load_run_model


def test_ece_averages_within_a_bin_before_taking_the_gap():
    # two answers in bin 11 ((11/15, 12/15]): 0.75 right and 0.79 wrong: accuracy 0.5, mean
    # confidence 0.77, gap 0.27 for both; a per-answer mean of |right - confidence| says 0.52
    probs = np.array([[0.75, 0.25], [0.79, 0.21]])
    labels = np.array([0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.27)
    assert reliability_bins(probs, labels)[11]["count"] == 2


def test_ece_matches_a_hand_computed_case():
    # top-1 confidences 0.95, 0.9 (bin 14: (14/15, 1] holds 0.95 only; 0.9 is in bin 13),
    # 0.55 and 0.5 (bin 8: (8/15, 9/15] holds 0.55; 0.5 is in bin 7: (7/15, 8/15]).
    probs = np.array(
        [
            [0.95, 0.05, 0.0],
            [0.9, 0.1, 0.0],
            [0.55, 0.45, 0.0],
            [0.5, 0.3, 0.2],
        ]
    )
    labels = np.array([0, 1, 0, 1])  # right, wrong, right, wrong
    # per bin |accuracy - confidence| x share: 0.05/4 + 0.9/4 + 0.45/4 + 0.5/4
    assert expected_calibration_error(probs, labels) == pytest.approx((0.05 + 0.9 + 0.45 + 0.5) / 4)
    rows = reliability_bins(probs, labels)
    assert [i for i, r in enumerate(rows) if r["count"]] == [7, 8, 13, 14]
    assert rows[13] == pytest.approx(
        {"lower": 13 / 15, "upper": 14 / 15, "count": 1, "confidence": 0.9, "accuracy": 0.0}
    )
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -np.mean(np.log([0.95, 0.1, 0.55, 0.3]))
    )
    assert expected_calibration_error(np.ones((2, 2)) / 2, np.array([0, 1])) == 0.0


def test_a_fitted_temperature_undoes_a_known_skew_without_changing_a_label():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (20_000, 10))
    true = apply_temperature(np.exp(logits), 1.0)  # calibrated by construction
    labels = np.array([rng.choice(10, p=p) for p in true])
    for skew in (0.3, 2.5):  # flattened (as version 3's), then overconfident
        skewed = apply_temperature(true, skew)
        temperature = fit_temperature(skewed, labels)
        assert temperature == pytest.approx(1 / skew, rel=0.05)
        fixed = apply_temperature(skewed, temperature)
        assert expected_calibration_error(skewed, labels) > 0.05
        assert expected_calibration_error(fixed, labels) < 0.01
        assert negative_log_likelihood(fixed, labels) < negative_log_likelihood(skewed, labels)
        assert (fixed.argmax(1) == skewed.argmax(1)).all()


def test_apply_temperature_is_a_softmax_of_log_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    out = apply_temperature(probs, 0.5)  # p^2, renormalised
    np.testing.assert_allclose(out[0], np.array([0.49, 0.04, 0.01]) / 0.54)
    np.testing.assert_allclose(out[1], [1.0, 0.0, 0.0], atol=1e-12)  # a zero stays finite
    np.testing.assert_allclose(out.sum(1), 1.0)


@pytest.mark.slow
def test_export_puts_the_validation_temperature_in_the_graph(trained_run, cifar_dir, tmp_path):
    models = tmp_path / "models"
    argv = ["export", "--run", str(trained_run), "--models-dir", str(models), "--name", "c10"]
    assert main([*argv, "--data", str(cifar_dir), "--tta-flip"]) == 0
    version = models / "c10" / "1"
    card = card_of(version)
    calibration = card["calibration"]
    temperature = calibration["temperature"]
    assert temperature > 0 and "validation split" in calibration["method"]
    val = calibration["validation"]
    assert val["before"]["images"] == val["after"]["images"] == card["data"]["val_images"]
    # fitted on validation to minimise the NLL there, T = 1 among the candidates
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-9
    assert calibration["test"]["after"]["accuracy"] == card["metrics"]["test_accuracy"]

    x = np.random.default_rng(5).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    raw, _ = load_run_model(trained_run, tta_flip=True)
    uncalibrated = raw.predict_on_batch(x)
    exported = predict(saved_model_predictor(version), x)
    np.testing.assert_allclose(exported, apply_temperature(uncalibrated, temperature), atol=1e-5)
    assert (exported.argmax(1) == uncalibrated.argmax(1)).all()

    readme = (version / "README.md").read_text()
    assert (version / "reliability_diagram.png").is_file()
    assert "](reliability_diagram.png)" in readme and "## Probabilities" in readme
    assert f"Temperature **{temperature:.4f}**" in readme

    assert main([*argv, "--tta-flip"]) == 2  # calibrating needs the validation split


@pytest.mark.slow
def test_calibrate_writes_the_next_version_and_its_int8_copy_answers_probabilities(
    trained_run, cifar_dir, tmp_path, capsys
):
    models = tmp_path / "models"
    export = ["export", "--run", str(trained_run), "--models-dir", str(models), "--name", "c10"]
    assert main([*export, "--data", str(cifar_dir), "--calibrate", "none"]) == 0
    source = models / "c10" / "1"
    assert card_of(source)["calibration"] == {"method": "none", "temperature": None}
    assert main(["calibrate", "--model", str(source), "--data", str(cifar_dir)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    version = models / "c10" / "2"
    assert printed["exported"] == str(version) and printed["labels_changed"] == 0
    card = card_of(version)
    assert card["version"] == 2 and card["calibrated_from"]["version"] == 1
    assert card["calibration"]["temperature"] == printed["temperature"]
    assert card["calibration"]["source_variants"] == []  # the source's were never measured
    assert card["metrics"]["test_accuracy"] == card_of(source)["metrics"]["test_accuracy"]
    assert (version / "learning_curves.png").is_file()
    assert card["reproduce"] == {
        "calibrate": f"cifar10-model calibrate --model {source} --data {cifar_dir}"
    }

    x = np.random.default_rng(6).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    before = predict(saved_model_predictor(source), x)
    after = predict(saved_model_predictor(version), x)
    np.testing.assert_allclose(after, apply_temperature(before, printed["temperature"]), atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()

    assert main(["calibrate", "--model", str(version), "--data", str(cifar_dir)]) == 2
    assert "already calibrated" in capsys.readouterr().err

    # the int8 copy keeps the head, the averages and the temperature in float
    argv = ["quantize", "--model", str(version), "--data", str(cifar_dir), "--images", "40"]
    assert main(argv) == 0
    int8 = card_of(version)["int8"]
    assert int8["max_sum_error"] <= 1e-4
    assert "stay in float" in int8["float_head"]
    assert (version / INT8_DIR / "model.xml").is_file()
    test_images = load_cifar10(str(cifar_dir)).test.x
    reference = load_served_model(version.parent, 2, "tensorflow", "f32").predict(test_images)
    model = ov.Core().read_model(version / INT8_DIR / "model.xml")
    kinds = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    head = head_and_after(model)
    softmaxes = [n for n in head if kinds[n].get_type_name() in ("Softmax", "SoftMax")]
    assert len(softmaxes) == 2  # the head's and the temperature's
    assert not [n for n in head if kinds[n].get_type_name() == "FakeQuantize"]
    matmul = next(kinds[n] for n in head if kinds[n].get_type_name() == "MatMul")
    assert matmul.get_friendly_name() in float_layers(model)
    assert all(v.get_node().get_type_name() != "FakeQuantize" for v in matmul.input_values())
    # every variant answers probabilities; the float ones agree with TF f32 within 0.01 (the
    # int8 copy of this barely trained network does not, so that bound is checked on the
    # shipped version's measured card: tests/test_shipped_models.py)
    precisions = ["f32", "int8"] + (["bf16"] if has_fast_bf16() else [])
    for precision in precisions:
        probs = load_served_model(version.parent, 2, "openvino", precision).predict(test_images)
        np.testing.assert_allclose(probs.astype(np.float64).sum(1), 1.0, atol=1e-4)
        if precision != "int8":
            assert np.abs(probs - reference).max() <= 0.01, precision


@pytest.mark.slow
def test_a_calibrated_version_can_be_copied_and_served_elsewhere(trained_run, cifar_dir, tmp_path):
    """``--models-dir`` writes the calibrated version under another models folder."""
    models = tmp_path / "models"
    export = ["export", "--run", str(trained_run), "--models-dir", str(models), "--name", "c10"]
    assert main([*export, "--data", str(cifar_dir), "--calibrate", "none"]) == 0
    other = tmp_path / "other"
    argv = ["calibrate", "--model", str(models / "c10" / "1"), "--data", str(cifar_dir)]
    assert main([*argv, "--models-dir", str(other), "--version", "7"]) == 0
    assert card_of(other / "c10" / "7")["calibration"]["temperature"] > 0
    assert not (models / "c10" / "2").exists()


@pytest.mark.slow
def test_the_graphs_temperature_is_softmax_of_log_p_over_t(trained_run):
    classifier, _ = load_run_classifier(trained_run)
    x = np.random.default_rng(8).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    for flip, translate in ((False, 0), (True, 1)):
        plain = wrap_for_input(classifier, 32, flip, translate).predict_on_batch(x)
        for temperature in (0.4, 2.5):
            graph = wrap_for_input(classifier, 32, flip, translate, temperature)
            calibrated = graph.predict_on_batch(x)
            np.testing.assert_allclose(calibrated, apply_temperature(plain, temperature), atol=1e-5)
            assert np.abs(calibrated - plain).max() > 1e-3  # it did something
    with pytest.raises(ConfigError):
        wrap_for_input(classifier, 32, temperature=0.0)


@pytest.mark.slow
def test_calibration_lowers_a_deliberately_skewed_tiny_model(trained_run, cifar_dir, tmp_path):
    """The tiny run's answers made overconfident in the graph (T = 0.25: nearly every answer
    at probability 1, where the barely trained network is right far less often): fitted on
    its validation split, calibration brings the ECE down on the validation and test images
    alike, every label kept."""
    classifier, cfg = load_run_classifier(trained_run)
    data = load_cifar10(str(cifar_dir))
    _, validation = split_validation(data.train, cfg.val_fraction, cfg.seed)
    # the flattened model is what is calibrated: wrap(None) is it, wrap(T) calibrates it
    skewed = wrap_for_input(classifier, 32, temperature=0.25)

    def wrap(temperature):
        if temperature is None:
            return skewed
        return _then_temperature(skewed, temperature)

    calibrated = calibrate_served_model(wrap, validation, data.test, tmp_path / "r.png")
    section = calibrated.section
    for split in ("validation", "test"):  # a few dozen images of a barely trained network
        before, after = section[split]["before"], section[split]["after"]
        assert after["ece"] < before["ece"], split
        assert after["nll"] < before["nll"], split
        assert after["accuracy"] == before["accuracy"]
    val = section["validation"]
    gap_before = val["before"]["mean_confidence"] - val["before"]["accuracy"]
    gap_after = abs(val["after"]["mean_confidence"] - val["after"]["accuracy"])
    assert gap_before > 0.3 and gap_after < gap_before / 2  # overconfident, then not
    assert val["after"]["ece"] < val["before"]["ece"] - 0.2
    assert section["temperature"] > 1  # it flattens what was sharpened
    assert (calibrated.after.argmax(1) == calibrated.before.argmax(1)).all()
    assert section["graph_check"]["max_abs_difference"] <= 1e-5
    assert (tmp_path / "r.png").is_file()


def _then_temperature(model, temperature: float):
    """``model`` with a temperature on its output, as ``wrap_for_input`` puts one."""
    import keras

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    probs = model(inputs)
    logits = keras.ops.log(keras.ops.maximum(probs, 1e-30))
    return keras.Model(inputs, keras.ops.softmax(logits * np.float32(1 / temperature), axis=-1))


def test_reproduce_commands_point_the_measurements_at_the_new_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the card's relative commands were run
    root = tmp_path / "models" / "m"
    (root / "3").mkdir(parents=True)
    source = {
        "reproduce": {
            "train": "cifar10-model train --config c.json",
            "export_and_test": "cifar10-model export --run r --data d",
            "int8": f"cifar10-model quantize --model {root / '3'} --data d --max-drop-pt 0.1",
            "served_variants": f"python benchmarks/variant_accuracy.py --model {root / '3'} --x",
            "upload_forms": "python benchmarks/upload_forms.py --model models/m/3 --data d",
        }
    }
    commands = reproduce_commands(source, root / "3", root / "31", "D")
    assert commands["train"] == source["reproduce"]["train"]
    assert list(commands) == [  # in the order they run: the source made, calibrated, measured
        "train",
        "export_and_test",
        "calibrate",
        "int8",
        "served_variants",
        "upload_forms",
    ]
    assert commands["export_and_test"].endswith("--data d --calibrate none")
    assert (
        commands["int8"]
        == f"cifar10-model quantize --model {root / '31'} --data d --max-drop-pt 0.1"
    )
    assert f"--model {root / '31'} --x" in commands["served_variants"]
    # spelled as the card spells it (relative), the whole path replaced
    assert "--model models/m/31 --data d" in commands["upload_forms"]
    assert commands["calibrate"] == f"cifar10-model calibrate --model {root / '3'} --data D"


def test_the_sources_measured_variants_are_kept_as_before():
    measured = {"runtime": "openvino", "precision": "int8", "ece": 0.13, "nll": 0.35}
    source = {
        "served_variants": {
            "variants": [
                {**measured, "seconds": 58.5, "test_per_class_accuracy": {}},
                {"runtime": "openvino", "precision": "bf16", "test_accuracy": 0.93},  # no ECE
            ]
        }
    }
    assert source_variants(source) == [measured]
    assert source_variants({}) == []
