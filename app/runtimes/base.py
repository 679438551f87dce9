"""The interface every inference runtime implements, and the model contract's names.

The contract (written by ``training``, read here without importing it): a SavedModel with
signature ``serving_default`` taking ``image`` uint8 ``[batch, H, W, 3]`` and returning
``probabilities`` float32 ``[batch, classes]``; optionally an OpenVINO int8 IR beside it in
``openvino-int8/model.xml`` (made by ``cifar10-model quantize``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INT8_DIR = "openvino-int8"

RUNTIMES = ("openvino", "tensorflow")
PRECISIONS = ("f32", "bf16", "int8")


class RuntimeConfigError(Exception):
    """The configured runtime or precision cannot serve this model on this machine."""


class RuntimeLoadError(Exception):
    """The model files are unusable by the runtime (missing, corrupt, wrong signature)."""


class Runtime(Protocol):
    """A loaded model: uint8 ``[n, h, w, 3]`` images in, float32 ``[n, classes]`` out.

    ``predict`` is safe to call from several threads; ``streams`` says how many calls
    compute at once, each on its share of the cores (the batcher runs that many inference
    threads). Further calls wait for a free stream.
    """

    name: str  # "openvino" or "tensorflow"
    precision: str  # "f32", "bf16" or "int8"
    input_size: tuple[int, int]  # (height, width) of the input images
    num_classes: int
    streams: int

    def predict(self, images: np.ndarray) -> np.ndarray: ...
