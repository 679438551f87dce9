"""The TensorFlow runtime: the SavedModel's ``serving_default`` signature, float32.

One stream: TensorFlow splits every operation over all cores (concurrent calls are safe, and
share those cores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.runtimes.base import INPUT_NAME, OUTPUT_NAME, SIGNATURE, RuntimeLoadError


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class TensorFlowRuntime:
    input_size: tuple[int, int]
    num_classes: int
    _signature: object = field(repr=False)
    _loaded: object = field(repr=False)  # keeps the trackable object (and its variables) alive
    name: str = "tensorflow"
    precision: str = "f32"
    streams: int = 1

    @classmethod
    def load(cls, path: Path) -> TensorFlowRuntime:
        """Load and check the SavedModel in ``path``; failures are one-line errors."""
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many types for a corrupt file
            raise RuntimeLoadError(f"{path}: cannot load SavedModel ({_first_line(exc)})") from None
        signature = loaded.signatures.get(SIGNATURE)
        if signature is None:
            raise RuntimeLoadError(f"{path}: no '{SIGNATURE}' signature")
        spec = signature.structured_input_signature[1].get(INPUT_NAME)
        if spec is None or spec.dtype != tf.uint8 or spec.shape.rank != 4:
            raise RuntimeLoadError(
                f"{path}: signature input '{INPUT_NAME}' must be uint8 [b, h, w, 3]"
            )
        h, w = spec.shape[1], spec.shape[2]
        if h is None or w is None:
            raise RuntimeLoadError(f"{path}: signature input must have a fixed height and width")
        outputs = signature.structured_outputs
        if OUTPUT_NAME not in outputs or outputs[OUTPUT_NAME].shape[-1] is None:
            raise RuntimeLoadError(f"{path}: signature has no output '{OUTPUT_NAME}' [b, classes]")
        return cls((int(h), int(w)), int(outputs[OUTPUT_NAME].shape[-1]), signature, loaded)

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self._signature(**{INPUT_NAME: tf.constant(images, dtype=tf.uint8)})
        return out[OUTPUT_NAME].numpy()
