"""``cifar10-model calibrate``: an exported version, calibrated, as the next version.

The source version's weights are rebuilt into its own network and served variant (internal
size, test-time averages) from its card, checked against the source SavedModel's answers, and
a temperature is fitted on the validation split its training run held out
(``training.calibration``). The new version holds the same weights with the temperature in the
graph: every label the same, the probabilities calibrated. Its card is the source's, with the
new ``calibration`` section, the test metrics measured again, ``calibrated_from`` naming the
source, and without what was measured on the source's files alone (its int8 copy, served
variants and upload forms): ``quantize`` and the benchmarks measure the new version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.calibration import (
    RELIABILITY_FIGURE,
    apply_temperature,
    calibrate_on_validation,
    plot_calibration,
)
from training.config import ConfigError, TrainConfig
from training.contract import CARD_NAME
from training.data import DataError, load_cifar10
from training.evaluate import classification_report, keras_predictor, predict
from training.export import next_version, write_export
from training.provenance import git_commit, library_versions, utc_now
from training.quantize import version_splits
from training.run import LEARNING_CURVES

# Measured on the source's own files: they do not describe the new version until measured again.
SOURCE_ONLY = ("int8", "served_variants", "upload_forms", "calibration")
# The rebuilt network must answer as the source SavedModel does, to this.
REBUILD_TOLERANCE = 1e-4


@dataclass(frozen=True)
class RecalibrateResult:
    path: Path
    temperature: float
    test_accuracy: float
    labels_changed: int


def rebuild_version(version_dir: Path, card: dict, temperature: float | None = None):
    """The version's served model (uint8 in, probabilities out) rebuilt in Keras from its
    card and its SavedModel's weights; with ``temperature``, calibrated."""
    import keras

    from training.model import build_classifier, wrap_for_input
    from training.warm_start import load_initial_weights

    cfg = TrainConfig.from_dict(card["training"]["config"])
    keras.mixed_precision.set_global_policy("float32")
    classifier = build_classifier("none", cfg.dropout, stem=cfg.stem)
    load_initial_weights(classifier, version_dir)
    return classifier, lambda t=temperature: wrap_for_input(
        classifier, card["internal_size"], card["tta_flip"], card.get("tta_translate", 0), t
    )


def reproduce_commands(
    source: dict, version_dir: Path, data: str, root: Path, version: int | None
) -> dict:
    """The source card's ``reproduce`` commands that made the weights, then this command; the
    commands that measure a version (int8, served variants, upload forms) pointed at the new
    one (``root``'s next free number, or ``version``)."""
    new_dir = root / str(version or next_version(root))
    commands = {k: v for k, v in (source.get("reproduce") or {}).items() if k not in SOURCE_ONLY}
    commands["calibrate"] = f"cifar10-model calibrate --model {version_dir} --data {data}" + (
        f" --version {version}" if version else ""
    )
    if root != version_dir.parent:
        commands["calibrate"] += f" --models-dir {root.parent}"
    for key in ("int8", "served_variants", "upload_forms"):
        if key in (source.get("reproduce") or {}):
            commands[key] = source["reproduce"][key].replace(str(version_dir), str(new_dir))
    return commands


def recalibrate_version(
    version_dir: Path, data: str, version: int | None = None, models_dir: Path | None = None
) -> RecalibrateResult:
    """Write ``version_dir``'s weights, calibrated on its validation split, as a new version
    of the same model (the next free number unless ``version`` is given), beside it unless
    ``models_dir`` says where."""
    from training.evaluate import saved_model_predictor

    version_dir = Path(version_dir)
    card_path = version_dir / CARD_NAME
    if not (version_dir / "saved_model.pb").is_file() or not card_path.is_file():
        raise ConfigError(f"{version_dir}: not an exported version (saved_model.pb + card)")
    source = json.loads(card_path.read_text())
    if (source.get("calibration") or {}).get("temperature") is not None:
        temperature = source["calibration"]["temperature"]
        raise ConfigError(f"{version_dir}: already calibrated (temperature {temperature:.4f})")
    _, validation = version_splits(data, source)
    if not len(validation):
        raise ConfigError(f"{version_dir}: its training run held out no validation images")
    test = load_cifar10(data).test

    _, wrap = rebuild_version(version_dir, source)
    uncalibrated = wrap(None)
    probe = test.x[:64]
    difference = np.abs(
        predict(keras_predictor(uncalibrated), probe)
        - predict(saved_model_predictor(version_dir), probe)
    ).max()
    if difference > REBUILD_TOLERANCE:
        raise DataError(
            f"{version_dir}: the network rebuilt from its card answers up to {difference:.2g} "
            "away from the SavedModel; not calibrating a different model"
        )
    before = predict(keras_predictor(uncalibrated), test.x)
    section = calibrate_on_validation(
        predict(keras_predictor(uncalibrated), validation.x), validation.y, before, test.y
    )
    temperature = section["temperature"]
    after = apply_temperature(before, temperature)
    report = classification_report(test.y, after, source["class_names"])
    labels_changed = int((after.argmax(1) != before.argmax(1)).sum())

    card = {k: v for k, v in source.items() if k not in SOURCE_ONLY}
    card.update(
        created=utc_now(),
        git_commit=git_commit(),
        libraries=library_versions(),
        calibration=section,
        calibrated_from={
            "name": source["name"],
            "version": source["version"],
            "note": "the same weights and served variant; only the temperature is new, "
            f"and {labels_changed} of {len(test.y)} test labels changed",
        },
        preprocessing_in_graph=[
            *source["preprocessing_in_graph"],
            f"temperature scaling of the averaged answer: softmax(log p / {temperature:.4f})",
        ],
        metrics={
            **source.get("metrics", {}),
            "test_accuracy": report["accuracy"],
            "test_per_class_accuracy": {k: v["recall"] for k, v in report["per_class"].items()},
            "test": report,
        },
    )
    root = (Path(models_dir) if models_dir else version_dir.parent.parent) / version_dir.parent.name
    card["reproduce"] = reproduce_commands(source, version_dir, data, root, version)
    from training.plots import plot_confusion_matrix

    with tempfile.TemporaryDirectory() as tmp:
        figures = [Path(tmp) / RELIABILITY_FIGURE, Path(tmp) / "confusion_matrix_test.png"]
        plot_calibration(section, figures[0])
        plot_confusion_matrix(
            report["confusion_matrix"],
            source["class_names"],
            figures[1],
            f"official test set: accuracy {report['accuracy']:.2%}",
        )
        if (version_dir / LEARNING_CURVES).is_file():
            shutil.copy2(version_dir / LEARNING_CURVES, Path(tmp) / LEARNING_CURVES)
            figures.append(Path(tmp) / LEARNING_CURVES)
        path = write_export(
            wrap(temperature),
            root.parent,
            root.name,
            version,
            card,
            figures,
        )
    return RecalibrateResult(path, temperature, report["accuracy"], labels_changed)
