"""What every peer's handler shares with this project's server (issue 45): the same model
loaded the same way (``app.model.load_served_model``: the same runtime, precision, threads and
one stream), the same decoding (``app.png``'s fast path for a plain PNG of the input size,
else ``app.images``), and the same answer's shape. Each peer's app imports this module from
the peer's own venv (the project installed there without its dependencies)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from app.config import Settings
from app.images import decode_opened, open_upload
from app.model import ServedModel, load_served_model
from app.png import decode_plain_png

MAX_IMAGE_PIXELS = Settings.model_fields["max_image_pixels"].default


def arguments() -> argparse.Namespace:
    """What ``benchmarks/peers.py`` gives every peer's app."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--variant", default="openvino:int8")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=16)
    # the name the Open Inference Protocol peers serve it under, as this server does: its folder's
    parser.add_argument("--model-name", default="cifar10-resnet50")
    return parser.parse_args()


def load(model_dir: Path, variant: str, max_batch_size: int) -> ServedModel:
    """The model as the server loads it (``CIFAR10_INFERENCE_STREAMS=1``), warmed up."""
    runtime, precision = variant.split(":")
    model = load_served_model(model_dir, None, runtime, precision, streams=1)
    model.warm_up(1, (1, max_batch_size))
    return model


def decode(model: ServedModel, data: bytes, name: str = "upload") -> np.ndarray:
    """``(h, w, 3)`` uint8 at the model's input size, as the server decodes an upload."""
    plain = decode_plain_png(data, model.input_size, MAX_IMAGE_PIXELS)
    if plain is not None:
        return plain
    return decode_opened(open_upload(data, MAX_IMAGE_PIXELS, name), model.input_size, name)


def answer(model: ServedModel, probabilities: np.ndarray) -> dict:
    """The fields of ``/predict``'s answer that the benchmark checks."""
    names = model.class_names
    best = int(np.argmax(probabilities))
    return {
        "label": names[best],
        "probability": float(probabilities[best]),
        "probabilities": dict(zip(names, map(float, probabilities), strict=True)),
    }
