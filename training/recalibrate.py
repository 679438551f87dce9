"""``cifar10-model calibrate``: an exported version, calibrated, as the next version.

The source version's weights are rebuilt into its own network and served variant (internal
size, test-time averages) from its card, checked against the source SavedModel's answers, and
a temperature is fitted on the validation split its training run held out
(``training.calibration``). The new version holds the same weights with the temperature in the
graph: every label the same, the probabilities calibrated. Its card is the source's, with the
new ``calibration`` section, the test metrics from the calibrated answers, ``calibrated_from``
naming the source, and without what was measured on the source's files alone (its int8 copy,
served variants and upload forms): ``quantize`` and the benchmarks measure the new version.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.calibration import RELIABILITY_FIGURE, calibrate_served_model, temperature_step
from training.config import ConfigError, TrainConfig
from training.contract import CARD_NAME
from training.data import DataError, load_cifar10
from training.evaluate import classification_report, keras_predictor, predict
from training.export import ExportError, next_version, write_export
from training.provenance import git_commit, library_versions, utc_now
from training.quantize import version_splits
from training.run import LEARNING_CURVES

# Measured on the source's own files: they do not describe the new version until measured again.
SOURCE_MEASUREMENTS = ("int8", "served_variants", "upload_forms", "calibration")
# The source's ``reproduce`` commands that measure a version: pointed at the new one.
MEASURING_COMMANDS = ("int8", "served_variants", "upload_forms")
# The rebuilt network must answer as the source SavedModel does, to this, on this many images.
REBUILD_TOLERANCE, REBUILD_CHECK_IMAGES = 1e-4, 64


@dataclass(frozen=True)
class RecalibrateResult:
    path: Path
    temperature: float
    test_accuracy: float
    labels_changed: int


def rebuild_classifier(version_dir: Path, card: dict):
    """The version's network (float input, any size) rebuilt in Keras float32 from its card,
    with its SavedModel's weights."""
    import keras

    from training.model import build_classifier
    from training.warm_start import load_initial_weights

    cfg = TrainConfig.from_dict(card["training"]["config"])
    keras.mixed_precision.set_global_policy("float32")  # what export writes
    classifier = build_classifier("none", cfg.dropout, stem=cfg.stem)
    load_initial_weights(classifier, version_dir)
    return classifier


def source_variants(source: dict) -> list[dict]:
    """The source version's served variants as ``benchmarks/variant_accuracy.py`` measured
    them (where it measured their calibration): what each answered before the temperature."""
    keep = ("runtime", "precision", "test_accuracy", "ece", "nll", "mean_confidence")
    keep += ("validation_ece", "validation_nll", "max_sum_error")
    variants = (source.get("served_variants") or {}).get("variants", [])
    return [{k: v[k] for k in keep if k in v} for v in variants if "ece" in v]


def reproduce_commands(source: dict, given: Path, target: Path, data: str) -> dict:
    """The source card's ``reproduce`` commands that made the weights (its export told not to
    calibrate, so that this command can), this command (``given``: the source as the user
    named it), and the commands that measure a version, their ``--model`` pointed at
    ``target``."""
    made, measured = {}, {}
    for key, command in (source.get("reproduce") or {}).items():
        if key in MEASURING_COMMANDS:
            measured[key] = re.sub(
                r"(--model\s+)(\S+)", lambda m: m.group(1) + _sibling(m.group(2), target), command
            )
        elif "cifar10-model export" in command and "--calibrate" not in command:
            made[key] = command + " --calibrate none"
        else:
            made[key] = command
    calibrate = {"calibrate": f"cifar10-model calibrate --model {given} --data {data}"}
    return made | calibrate | measured  # in the order they run


def _sibling(spelled: str, target: Path) -> str:
    """``spelled`` (a version folder as a command names it) with its last part ``target``'s
    version, where ``target`` is a sibling; else ``target`` itself."""
    path = Path(spelled)
    if path.resolve().parent == target.resolve().parent:
        return str(path.parent / target.name)
    return str(target)


def _rebuilt(version_dir: Path, card: dict, images: np.ndarray):
    """``rebuild_classifier``, refused unless its served model answers as the SavedModel."""
    from training.evaluate import saved_model_predictor
    from training.model import wrap_for_input

    classifier = rebuild_classifier(version_dir, card)
    served = wrap_for_input(
        classifier, card["internal_size"], card["tta_flip"], card.get("tta_translate", 0)
    )
    difference = np.abs(
        predict(keras_predictor(served), images)
        - predict(saved_model_predictor(version_dir), images)
    ).max()
    if difference > REBUILD_TOLERANCE:
        raise DataError(
            f"{version_dir}: the network rebuilt from its card answers up to {difference:.2g} "
            "away from the SavedModel; not calibrating a different model"
        )
    return classifier


def recalibrate_version(
    version_dir: Path, data: str, version: int | None = None, models_dir: Path | None = None
) -> RecalibrateResult:
    """Write ``version_dir``'s weights, calibrated on its validation split, as a new version
    of the same model (the next free number unless ``version`` is given), beside it unless
    ``models_dir`` says where."""
    from training.model import wrap_for_input
    from training.plots import plot_confusion_matrix

    given = Path(version_dir)
    version_dir = given.resolve()
    card_path = version_dir / CARD_NAME
    if not (version_dir / "saved_model.pb").is_file() or not card_path.is_file():
        raise ConfigError(f"{given}: not an exported version (saved_model.pb + card)")
    source = json.loads(card_path.read_text())
    if (source.get("calibration") or {}).get("temperature") is not None:
        temperature = source["calibration"]["temperature"]
        raise ConfigError(f"{given}: already calibrated (temperature {temperature:.4f})")
    root = (Path(models_dir) if models_dir else version_dir.parent.parent) / version_dir.parent.name
    target = root / str(version or next_version(root))
    if target.exists():
        raise ExportError(f"{target}: version already exists; pick another --version")
    _, validation = version_splits(data, source)
    if not len(validation):
        raise ConfigError(f"{given}: its training run held out no validation images")
    test = load_cifar10(data).test

    classifier = _rebuilt(version_dir, source, test.x[:REBUILD_CHECK_IMAGES])
    with tempfile.TemporaryDirectory() as tmp:
        figures = [Path(tmp) / RELIABILITY_FIGURE, Path(tmp) / "confusion_matrix_test.png"]
        calibrated = calibrate_served_model(
            lambda t: wrap_for_input(
                classifier,
                source["internal_size"],
                source["tta_flip"],
                source.get("tta_translate", 0),
                t,
            ),
            validation,
            test,
            figures[0],
        )
        section, after = calibrated.section, calibrated.after
        report = classification_report(test.y, after, source["class_names"])
        labels_changed = int((after.argmax(1) != calibrated.before.argmax(1)).sum())
        card = {k: v for k, v in source.items() if k not in SOURCE_MEASUREMENTS}
        card.update(
            created=utc_now(),
            git_commit=git_commit(),
            libraries=library_versions(),
            calibration={**section, "source_variants": source_variants(source)},
            calibrated_from={
                "name": source["name"],
                "version": source["version"],
                "note": "the same weights and served variant; only the temperature is new. "
                "softmax(log p / T) keeps the order of the classes, so no label changes "
                f"({labels_changed} of {len(test.y)} test labels in the calibrated answers; the "
                "SavedModel's own accuracy is measured by benchmarks/variant_accuracy.py)",
            },
            preprocessing_in_graph=[
                *source["preprocessing_in_graph"],
                temperature_step(section["temperature"]),
            ],
            metrics={
                **source.get("metrics", {}),
                "test_accuracy": report["accuracy"],
                "test_per_class_accuracy": {k: v["recall"] for k, v in report["per_class"].items()},
                "test": report,
            },
            reproduce=reproduce_commands(source, given, target, data),
        )
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
            calibrated.model, root.parent, root.name, int(target.name), card, figures
        )
    return RecalibrateResult(path, section["temperature"], report["accuracy"], labels_changed)
