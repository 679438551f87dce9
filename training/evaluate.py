"""Accuracy, per-class precision/recall and the confusion matrix, from a run or a SavedModel.

The official test set is the default; ``split="val"`` rebuilds the run's validation split
(same seed and fraction) for choices such as the served internal size, so the test set is
measured once, on the final model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.config import TrainConfig
from training.data import Split, load_cifar10, split_validation

Predictor = Callable[[np.ndarray], np.ndarray]


def predict(predictor: Predictor, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Probabilities ``(n, 10)`` for uint8 images, in batches."""
    out = [
        np.asarray(predictor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def classification_report(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, confusion matrix (rows true, columns predicted) and per-class scores."""
    k = len(class_names)
    pred = probs.argmax(axis=1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(matrix[i, i])
        support = int(matrix[i].sum())
        predicted = int(matrix[:, i].sum())
        per_class[name] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": support,
        }
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
        "images": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def saved_model_predictor(path: str | Path) -> Predictor:
    """Call an exported SavedModel through its ``serving_default`` signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(images: np.ndarray) -> np.ndarray:
        return signature(image=tf.constant(images, dtype=tf.uint8))["probabilities"].numpy()

    return run


def keras_predictor(model) -> Predictor:
    def run(images: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(images)

    return run


def load_run_model(run_dir: Path, internal_size: int | None = None, tta_flip: bool = False):
    """Rebuild a run's contract model from its config and final weights."""
    import keras

    from training.model import build_classifier, wrap_for_input
    from training.train import FINAL_WEIGHTS

    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    keras.mixed_precision.set_global_policy("float32")
    classifier = build_classifier("none", cfg.dropout)
    classifier.load_weights(run_dir / FINAL_WEIGHTS)
    return wrap_for_input(classifier, internal_size or cfg.internal_size, tta_flip), cfg


def evaluation_split(
    data_source: str, split: str, cfg: TrainConfig | None
) -> tuple[Split, list[str], str, str]:
    data = load_cifar10(data_source)
    if split == "test":
        return data.test, data.class_names, data.source, data.sha256
    if cfg is None:
        raise ValueError("the validation split needs the run's configuration (--run)")
    _, val = split_validation(data.train, cfg.val_fraction, cfg.seed)
    return val, data.class_names, data.source, data.sha256
