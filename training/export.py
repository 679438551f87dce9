"""Export a trained run as a versioned TensorFlow SavedModel plus its model card.

Layout (what TensorFlow Serving and KServe read): ``MODELS/<name>/<version>/`` holding the
SavedModel, with ``model_card.json`` and the figures beside ``saved_model.pb``.

Signature ``serving_default``: input ``image`` uint8 ``[batch, 32, 32, 3]`` RGB, output
``probabilities`` float32 ``[batch, 10]`` in the order of the card's ``class_names``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras

from training.model import INPUT_SHAPE, NUM_CLASSES
from training.provenance import git_commit, library_versions, utc_now

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CARD_NAME = "model_card.json"


class ExportError(Exception):
    """The export target is unusable (existing version, bad name)."""


def next_version(model_root: Path) -> int:
    versions = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, path: Path) -> None:
    """Write ``model`` as a SavedModel whose only signature is the serving contract."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.uint8, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def build_card(
    *,
    name: str,
    version: int,
    class_names: list[str],
    internal_size: int,
    tta_flip: bool,
    weights_source: str,
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
                "shape": [None, *INPUT_SHAPE],
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
        "preprocessing_in_graph": [
            "cast to float32",
            f"bilinear resize 32x32 -> {internal_size}x{internal_size}",
            "keras.applications.resnet50.preprocess_input (RGB->BGR, ImageNet mean)",
        ]
        + (["average with horizontally mirrored image (test-time flip)"] if tta_flip else []),
        "internal_size": internal_size,
        "tta_flip": tta_flip,
        "backbone": "keras.applications.ResNet50 (include_top=False)",
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
    tmp.rename(target)
    return target
