"""The model on PyTriton (https://triton-inference-server.github.io/pytriton), NVIDIA's Python
front to the Triton Inference Server binary (in the wheel), as its documentation recommends: an
inference function under ``@batch``, bound with ``Triton.bind`` to a model whose
``ModelConfig`` sets ``max_batch_size`` and Triton's dynamic batcher (``max_queue_delay``: Triton
joins concurrent requests into one call), one instance of the function (one model copy, as this
server has). Triton speaks only the Open Inference Protocol (V2): an image arrives as a ``BYTES``
tensor of shape ``[1, 1]`` (the PNG) with Triton's binary-data extension, at
``/v2/models/{--model-name}/infer``; the answer is the ``probabilities`` output, FP32
``[1, 10]``, in JSON.

``python -m benchmarks.peer_apps.pytriton_app --model-dir D --port P``."""

from __future__ import annotations

import os
import signal
import sysconfig
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peer_apps.common import arguments, decode, load
from deploy.local_server import free_port

# Triton's dynamic batcher with its default delay, 0: a batch of whatever queued while the one
# instance was busy, as this server's batcher does (its ``max_batch_wait_ms`` is 0 too)
MAX_QUEUE_DELAY_US = 0


def use_this_libpython() -> None:
    """Triton's Python stub loads ``libpython3.X.so`` by name: the first on the library path
    must be this interpreter's, whose standard library the stub then runs (a system copy of
    another patch release fails in ``multiprocessing``: measured, Debian's 3.11.2 under
    pyenv's 3.11.7)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / sysconfig.get_config_var("LDLIBRARY")).exists():
        os.environ["LD_LIBRARY_PATH"] = ":".join(
            [libdir, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        )


def interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: ``with Triton`` stops Triton, frees its memory


def main() -> None:
    args = arguments()
    use_this_libpython()
    signal.signal(signal.SIGTERM, interrupt)
    model = load(args.model_dir, args.variant, args.max_batch_size)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        images = np.stack([decode(model, bytes(row[0])) for row in image])
        return {"probabilities": model.predict(images).astype(np.float32)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
