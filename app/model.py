"""Load the exported SavedModel and its model card: the serving side of the model contract.

The contract (written by ``training``, read here without importing it): a folder of numbered
versions, each a SavedModel with signature ``serving_default`` taking ``image`` uint8
``[batch, H, W, 3]`` and returning ``probabilities`` float32 ``[batch, classes]``, with
``model_card.json`` beside it naming the classes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CARD_NAME = "model_card.json"

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model folder is missing or the SavedModel/card in it is unusable."""


@dataclass
class ServedModel:
    """A loaded SavedModel: ``predict`` maps uint8 images to probabilities."""

    name: str
    version: int
    path: Path
    card: dict
    class_names: list[str]
    input_size: tuple[int, int]
    _signature: object = field(repr=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self._signature(**{INPUT_NAME: tf.constant(images, dtype=tf.uint8)})
        return out[OUTPUT_NAME].numpy()

    def warm_up(self, runs: int, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run the model so the first request does not pay for graph setup."""
        h, w = self.input_size
        for _ in range(runs):
            for n in batch_sizes:
                self.predict(np.zeros((n, h, w, 3), dtype=np.uint8))


def resolve_version_dir(model_dir: Path, version: int | None) -> Path:
    """The pinned version's folder, or the highest-numbered one."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model directory not found")
    if version is not None:
        path = model_dir / str(version)
        if not path.is_dir():
            raise ModelLoadError(f"{path}: pinned model version not found")
        return path
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        reverse=True,
    )
    if not versions:
        raise ModelLoadError(f"{model_dir}: no numbered model version folders inside")
    return model_dir / str(versions[0])


def _read_card(path: Path) -> dict:
    card_path = path / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{card_path}: model card missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{card_path}: unreadable model card ({exc})") from None
    names = card.get("class_names") if isinstance(card, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(f"{card_path}: 'class_names' must be a non-empty list of strings")
    return card


def load_served_model(model_dir: Path, version: int | None = None) -> ServedModel:
    """Load and check a SavedModel version; every failure is a one-line ``ModelLoadError``."""
    path = resolve_version_dir(Path(model_dir), version)
    card = _read_card(path)
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path}: no saved_model.pb (not a SavedModel)")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a corrupt file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: cannot load SavedModel ({first_line})") from None
    signature = loaded.signatures.get(SIGNATURE)
    if signature is None:
        raise ModelLoadError(f"{path}: no '{SIGNATURE}' signature")
    inputs = signature.structured_input_signature[1]
    spec = inputs.get(INPUT_NAME)
    if spec is None or spec.dtype != tf.uint8 or spec.shape.rank != 4:
        raise ModelLoadError(f"{path}: signature input '{INPUT_NAME}' must be uint8 [b, h, w, 3]")
    h, w = spec.shape[1], spec.shape[2]
    if h is None or w is None:
        raise ModelLoadError(f"{path}: signature input must have a fixed height and width")
    outputs = signature.structured_outputs
    if OUTPUT_NAME not in outputs or outputs[OUTPUT_NAME].shape[-1] != len(card["class_names"]):
        raise ModelLoadError(
            f"{path}: output '{OUTPUT_NAME}' must have one column per class in the card"
        )
    model = ServedModel(
        name=card.get("name") or path.parent.name,
        version=int(path.name),
        path=path,
        card=card,
        class_names=card["class_names"],
        input_size=(int(h), int(w)),
        _signature=signature,
    )
    model._loaded = loaded  # keep the trackable object (and its variables) alive
    log.info("loaded model %s version %s from %s", model.name, model.version, path)
    return model
