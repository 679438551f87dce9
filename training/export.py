"""Export a trained run as a versioned TensorFlow SavedModel plus its model card.

Layout (what TensorFlow Serving and KServe read): ``MODELS/<name>/<version>/`` holding the
SavedModel, with ``model_card.json`` and the figures beside ``saved_model.pb``.

Signature ``serving_default``: input ``image`` uint8 ``[batch, 32, 32, 3]`` RGB, output
``probabilities`` float32 ``[batch, 10]`` in the order of the card's ``class_names``.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import keras

from training.calibration import (
    CALIBRATIONS,
    NOT_CALIBRATED,
    RELIABILITY_FIGURE,
    calibrate_served_model,
    temperature_step,
)
from training.config import ConfigError, TrainConfig
from training.contract import CARD_NAME, INPUT_NAME, OUTPUT_NAME, SIGNATURE
from training.data import IMAGE_SHAPE, NUM_CLASSES, DataError
from training.evaluate import classification_report, evaluation_split, keras_predictor, predict
from training.interpolate import read_interpolation
from training.model import wrap_for_input
from training.model_card import write_model_card
from training.provenance import git_commit, library_versions, utc_now
from training.run import DATA_INFO, HISTORY, LEARNING_CURVES, load_run_classifier, read_json
from training.select import DEFAULT_TOLERANCE_PT, select_on_validation


class ExportError(Exception):
    """The export target is unusable (existing version, bad name)."""


def next_version(model_root: Path) -> int:
    versions = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, path: Path) -> None:
    """Write ``model`` as a SavedModel whose only signature is the serving contract."""
    import tensorflow as tf

    # No ``archive.track(model)``: the endpoint tracks the variables it uses, and tracking the
    # model as well stored every weight twice (under ``variables`` and ``_all_variables``).
    archive = keras.export.ExportArchive()

    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


BACKBONES = {
    "imagenet": "keras.applications.ResNet50 (include_top=False)",
    "cifar": "ResNet50 with a CIFAR stem: 3x3 stride-1 convolution and a stride-2 max-pool in "
    "place of the 7x7 stride-2 convolution and max-pool; stages as keras.applications.ResNet50",
    "cifar-full": "ResNet50 with a CIFAR stem without max-pool: a 3x3 stride-1 convolution in "
    "place of the 7x7 stride-2 convolution and max-pool, so stage 2 works on 32x32 maps; stages "
    "as keras.applications.ResNet50",
}


def build_card(
    *,
    name: str,
    version: int,
    class_names: list[str],
    internal_size: int,
    tta_flip: bool,
    weights_source: str,
    tta_translate: int = 0,
    stem: str = "imagenet",
    temperature: float | None = None,
    data: dict,
    training: dict,
    metrics: dict | None,
    extra: dict | None = None,
) -> dict:
    """The model card: everything a server or a reader needs to know about this model."""
    card = {
        "name": name,
        "version": version,
        "created": utc_now(),
        "git_commit": git_commit(),
        "signature": {
            "name": SIGNATURE,
            "input": {
                "name": INPUT_NAME,
                "dtype": "uint8",
                "shape": [None, *IMAGE_SHAPE],
                "layout": "NHWC RGB 0..255",
            },
            "output": {
                "name": OUTPUT_NAME,
                "dtype": "float32",
                "shape": [None, NUM_CLASSES],
                "meaning": "class probabilities in class_names order",
            },
        },
        "class_names": class_names,
        "preprocessing_in_graph": ["cast to float32"]
        + (
            [f"bilinear resize 32x32 -> {internal_size}x{internal_size}"]
            if internal_size != 32
            else []
        )
        + ["keras.applications.resnet50.preprocess_input (RGB->BGR, ImageNet mean)"]
        + (["average with horizontally mirrored image (test-time flip)"] if tta_flip else [])
        + (
            [
                f"average with copies moved {tta_translate} px down-right and up-left (black "
                "border), each with its mirror image: weights 1/2 the image, 1/4 each copy "
                "(test-time translate; six passes of the network)"
            ]
            if tta_translate
            else []
        )
        + ([temperature_step(temperature)] if temperature is not None else []),
        "internal_size": internal_size,
        "tta_flip": tta_flip,
        "tta_translate": tta_translate,
        "backbone": BACKBONES[stem],
        "weights_source": weights_source,
        "data": data,
        "training": training,
        "metrics": metrics,
        "libraries": library_versions(),
    }
    card.update(extra or {})
    return card


def write_export(
    model: keras.Model,
    models_dir: Path,
    name: str,
    version: int | None,
    card: dict,
    figures: list[Path] = (),
) -> Path:
    """Export to ``models_dir/name/version`` (next free version by default); return the path."""
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}")
    root = models_dir / name
    version = version or next_version(root)
    target = root / str(version)
    if target.exists():
        raise ExportError(f"{target}: version already exists; pick another --version")
    tmp = root / f".{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    export_saved_model(model, tmp)
    card = {**card, "version": version}
    (tmp / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    for fig in figures:
        if Path(fig).exists():
            shutil.copy2(fig, tmp / Path(fig).name)
    write_model_card(tmp)
    tmp.rename(target)
    return target


def _with_epoch_median(history: dict) -> dict:
    """The run's summary plus the median seconds of its complete epochs: with ``epochs``, an
    estimate of the training time on that machine undisturbed (the recorded time also counts
    epochs slowed by whatever ran beside them)."""
    seconds = [e["seconds"] for e in history.get("epochs", []) if e.get("complete", True)]
    if not seconds:
        return history["summary"]
    return {**history["summary"], "median_epoch_s": round(statistics.median(seconds), 1)}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    test_accuracy: float | None
    selection: dict | None = None  # the card's validation_selection, when chosen there


def describe_weights_source(cfg: TrainConfig, interpolation: dict | None = None) -> str:
    """Where the run's starting weights came from, in the card's words; a fine-tuned run
    (``init_from``) also says where its source's weights came from, from the source's card,
    a distilled one (``teacher``) from which teacher, and an interpolated one
    (``training.interpolate``) how much of each it holds."""
    described = _describe_start(cfg)
    if cfg.teacher:
        described += (
            f"; distilled from {cfg.teacher} (its answers on the images before the upload "
            f"forms were {cfg.teacher_weight:g} of the targets)"
        )
    if not interpolation:
        return described
    alpha = interpolation["alpha"]
    return (
        f"{described}; then interpolated between the two (WiSE-FT, alpha {alpha:g}): "
        f"{1 - alpha:g} x the source's weights + {alpha:g} x the fine-tuned run's "
        f"({interpolation['fine_tuned_run']})"
    )


def _describe_start(cfg: TrainConfig) -> str:
    if cfg.weights != "none":
        return cfg.weights
    if not cfg.init_from:
        return "none (random initialization)"
    card_path = Path(cfg.init_from) / CARD_NAME
    if not card_path.is_file():
        return f"fine-tuned from {cfg.init_from}"
    source = json.loads(card_path.read_text())
    origin = source.get("weights_source", "")
    origin = (
        "itself trained from random initialization"
        if origin.startswith("none")
        else f"whose weights came from: {origin}"
    )
    return (
        f"fine-tuned from {source['name']} version {source['version']} ({cfg.init_from}), " + origin
    )


def export_run(
    run_dir: Path,
    models_dir: Path,
    name: str,
    *,
    version: int | None = None,
    internal_size: int | None = None,
    tta_flip: bool = False,
    tta_translate: int = 0,
    data: str | None = None,
    card_extra: dict | None = None,
    select_sizes: list[int] | None = None,
    select_tolerance_pt: float = DEFAULT_TOLERANCE_PT,
    select_translate: int = 0,
    calibrate: str = "temperature",
) -> ExportResult:
    """Export a finished run as ``models_dir/name/version`` with its card and figures.

    With ``data``, the exported variant is measured once on that data's official test set (which
    must be the data the run trained on: same sha256), and so is the variant without the
    test-time averages when they are on; the card and a confusion-matrix figure record it.

    With ``select_sizes``, the internal size and averages are not given but chosen on the run's
    validation split among those sizes, with and without the flip, and with flip and
    ``select_translate`` when set (``training.select``), before the test set is touched; the
    card's ``validation_selection`` records every candidate.

    ``calibrate="temperature"`` (the default, needs ``data``) fits a temperature on the run's
    validation split for the exported variant and puts it in the graph
    (``training.calibration``); the card's ``calibration`` records it with the ECE and NLL
    before and after, and a reliability diagram joins the figures. ``"none"`` exports the
    probabilities as the network averages them.
    """
    from training.plots import plot_confusion_matrix

    selection = None
    if select_sizes:
        if internal_size is not None or tta_flip or tta_translate:
            raise ConfigError("choose the variant on validation or give it, not both")
        if not data:
            raise ConfigError("choosing on the validation split needs the data")
        selection = select_on_validation(
            run_dir, data, select_sizes, select_tolerance_pt, select_translate
        )
        chosen = selection.chosen
        internal_size, tta_flip, tta_translate = (
            chosen.internal_size,
            chosen.tta_flip,
            chosen.tta_translate,
        )
    elif select_translate:
        raise ConfigError("a translate candidate needs --select-on-val")
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"calibrate must be one of {', '.join(CALIBRATIONS)}")
    if calibrate != "none" and not data:
        raise ConfigError(
            "calibration is fitted on the run's validation split: give --data, or "
            "--calibrate none to export uncalibrated probabilities"
        )
    classifier, cfg = load_run_classifier(run_dir)
    size = internal_size or cfg.internal_size
    model = wrap_for_input(classifier, size, tta_flip, tta_translate)
    data_info = read_json(run_dir, DATA_INFO)
    history = read_json(run_dir, HISTORY)
    metrics, figures = None, [run_dir / LEARNING_CURVES]
    calibration = dict(NOT_CALIBRATED)
    if data:
        test = evaluation_split(data, "test", None)
        if test.sha256 != data_info["sha256"]:
            raise DataError(f"{test.source}: checksum differs from the training data's")
        x, y = test.split.x, test.split.y
        if calibrate == "temperature":
            val = evaluation_split(data, "val", cfg).split
            if not len(val):
                raise ConfigError(
                    f"{run_dir}: the run held out no validation images to calibrate on "
                    "(val_fraction 0): --calibrate none"
                )
            calibrated = calibrate_served_model(
                lambda t: wrap_for_input(classifier, size, tta_flip, tta_translate, t),
                val,
                test.split,
                run_dir / RELIABILITY_FIGURE,
            )
            model, calibration, probs = calibrated.model, calibrated.section, calibrated.after
            figures.append(run_dir / RELIABILITY_FIGURE)
        else:
            probs = predict(keras_predictor(model), x)
        served = classification_report(y, probs, test.class_names)
        metrics = {
            "test_accuracy": served["accuracy"],
            "test_per_class_accuracy": {k: v["recall"] for k, v in served["per_class"].items()},
            "test": served,
        }
        if tta_flip:  # and the translate, which needs the flip
            plain_model = wrap_for_input(classifier, size)
            plain = classification_report(
                y, predict(keras_predictor(plain_model), x), test.class_names
            )
            metrics["test_plain_accuracy"] = plain["accuracy"]
        figure = run_dir / "confusion_matrix_test.png"
        plot_confusion_matrix(
            served["confusion_matrix"],
            test.class_names,
            figure,
            f"official test set: accuracy {served['accuracy']:.2%}",
        )
        figures.append(figure)
    chosen = selection.card() if selection else None
    interpolation = read_interpolation(run_dir)
    card = build_card(
        name=name,
        version=0,
        class_names=data_info["class_names"],
        internal_size=size,
        tta_flip=tta_flip,
        tta_translate=tta_translate,
        weights_source=describe_weights_source(cfg, interpolation),
        stem=cfg.stem,
        temperature=calibration["temperature"],
        data={k: data_info[k] for k in ("source", "sha256", "train_images", "val_images")},
        training={"config": cfg.to_dict(), "summary": _with_epoch_median(history)},
        metrics=metrics,
        extra=(card_extra or {})
        | {"calibration": calibration}
        | ({"validation_selection": chosen} if chosen else {})
        | ({"interpolation": interpolation} if interpolation else {}),
    )
    path = write_export(model, models_dir, name, version, card, figures)
    return ExportResult(path, metrics and metrics["test_accuracy"], chosen)
