"""The OpenVINO runtime: the same SavedModel, read by OpenVINO (no TensorFlow needed), at
f32 or bf16; or the int8 IR that ``cifar10-model quantize`` stored beside it.

``streams`` says how the cores are shared. One stream (the ``LATENCY`` hint) computes each
batch on every core: the lowest latency for one request. ``N`` streams (the ``THROUGHPUT`` hint
with ``NUM_STREAMS=N``) compute ``N`` batches at once, each on its share of the cores, with one
infer request per stream (the batcher runs one inference thread per stream). On 2 cores, two
streams did 13-18 % more images per second than one bare, 9 % more served for bf16 and none for
int8, and a lone image took 60-70 % longer (docs/runtimes.md), so one is the default.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.runtimes.base import INPUT_NAME, INT8_DIR, OUTPUT_NAME, RuntimeLoadError

# What OpenVINO computes the non-quantized layers in, per served precision.
_PRECISION_HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}


def _first_line(exc: Exception) -> str:
    """The message's first line that says something: OpenVINO prefixes its reason with
    ``Exception from <source file>:<line>:`` lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith("Exception from ")]
    return (telling or lines or [type(exc).__name__])[0]


def read_model(path: Path, precision: str):
    """The ``ov.Model`` to compile: the int8 IR, or the SavedModel read by OpenVINO's
    TensorFlow frontend.

    ``Core.read_model``, not ``ov.convert_model``: the same graph and the same outputs (checked
    on version 2: identical probabilities), faster, and without the converter's usage telemetry,
    which forks a process that posts to the internet at every load; offline, such a child hung
    on a lock it inherited, outlived the server and held its output pipes open."""
    import openvino as ov

    source = path / INT8_DIR / "model.xml" if precision == "int8" else path
    what = "int8 IR" if precision == "int8" else "SavedModel"
    try:
        return ov.Core().read_model(source)
    except Exception as exc:  # OpenVINO raises RuntimeError/OpConversionFailure and more
        raise RuntimeLoadError(
            f"{source}: cannot load {what} with OpenVINO ({_first_line(exc)})"
        ) from None


@dataclass
class OpenVINORuntime:
    precision: str
    input_size: tuple[int, int]
    num_classes: int
    streams: int
    _requests: queue.SimpleQueue = field(repr=False)  # the free infer requests, one per stream
    _output: object = field(repr=False)
    name: str = "openvino"

    @classmethod
    def load(cls, path: Path, precision: str, streams: int = 1) -> OpenVINORuntime:
        import openvino as ov

        model = read_model(path, precision)
        inputs = [i for i in model.inputs if INPUT_NAME in i.get_names()]
        outputs = [o for o in model.outputs if OUTPUT_NAME in o.get_names()]
        if not inputs or not outputs:
            raise RuntimeLoadError(f"{path}: needs input '{INPUT_NAME}' and output '{OUTPUT_NAME}'")
        shape = inputs[0].get_partial_shape()
        if inputs[0].get_element_type() != ov.Type.u8 or shape.rank.get_length() != 4:
            raise RuntimeLoadError(f"{path}: input '{INPUT_NAME}' must be uint8 [b, h, w, 3]")
        if not (
            shape[1].is_static
            and shape[2].is_static
            and outputs[0].get_partial_shape()[-1].is_static
        ):
            raise RuntimeLoadError(f"{path}: input height/width and classes must be fixed")
        config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision]}
        if streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        else:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=str(streams))
        requests = queue.SimpleQueue()
        try:
            compiled = ov.Core().compile_model(model, "CPU", config)
            for _ in range(streams):
                requests.put(compiled.create_infer_request())
        except Exception as exc:  # an unsupported hint here, no memory for the streams, ...
            raise RuntimeLoadError(
                f"{path}: OpenVINO cannot compile the {precision} model for this CPU "
                f"({_first_line(exc)})"
            ) from None
        return cls(
            precision,
            (shape[1].get_length(), shape[2].get_length()),
            outputs[0].get_partial_shape()[-1].get_length(),
            streams,
            requests,
            compiled.output(OUTPUT_NAME),
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        request = self._requests.get()  # waits while every stream is busy
        try:
            request.infer({INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})
            return request.get_tensor(self._output).data.copy()
        finally:
            self._requests.put(request)
