"""Accuracy, per-class precision/recall and the confusion matrix, from a run or a SavedModel.

The official test set is the default; ``split="val"`` rebuilds the run's validation split
(same seed and fraction) for choices such as the served internal size, so the test set is
measured once, on the final model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError, TrainConfig
from training.contract import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from training.data import NUM_CLASSES, Split, load_cifar10, split_validation

Predictor = Callable[[np.ndarray], np.ndarray]


def predict(predictor: Predictor, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Probabilities ``(n, classes)`` for uint8 images, in batches."""
    out = [
        np.asarray(predictor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


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

    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]

    def run(images: np.ndarray) -> np.ndarray:
        out = signature(**{INPUT_NAME: tf.constant(images, dtype=tf.uint8)})
        return out[OUTPUT_NAME].numpy()

    return run


def keras_predictor(model) -> Predictor:
    def run(images: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(images)

    return run


@dataclass(frozen=True)
class EvaluationData:
    """The images and labels to evaluate on, with the data set's identity."""

    split: Split
    class_names: list[str]
    source: str
    sha256: str


def evaluation_split(data_source: str, split: str, cfg: TrainConfig | None) -> EvaluationData:
    """The official test set, or (``split="val"``) the validation split of ``cfg``'s run."""
    data = load_cifar10(data_source)
    if split == "test":
        return EvaluationData(data.test, data.class_names, data.source, data.sha256)
    if cfg is None:
        raise ConfigError("the validation split needs the run's configuration (--run)")
    _, val = split_validation(data.train, cfg.val_fraction, cfg.seed)
    return EvaluationData(val, data.class_names, data.source, data.sha256)
