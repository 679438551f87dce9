"""Test-time copies as one batch against one network call per copy, in OpenVINO.

    python benchmarks/tta_batching.py [--rounds 5] [--seconds 1.5] [--translate 1]

The exported contract model (``training.model.wrap_for_input``) stacks its test-time copies
(the image, its mirror, and with ``--translate`` the moved copies and theirs) on the batch axis
and calls the network once. This builds that graph and the one-call-per-copy graph it replaced
on the same random-init CIFAR-stem ResNet50, checks that they give the same probabilities,
exports both as SavedModels, and times each in OpenVINO (f32, and bf16 where the CPU has it)
with the server's latency configuration at batch 1 and 16, in interleaved rounds (the median
of the per-round ratios is the result). Only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import time_calls  # noqa: E402


def one_call_per_copy(classifier, tta_translate: int):
    """The contract graph as it was: the network called on each copy, then averaged."""
    import keras
    from keras import layers

    from training.contract import INPUT_NAME
    from training.data import IMAGE_SHAPE

    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = keras.ops.cast(inputs, "float32")
    copies, weights = [x], [1.0]
    if tta_translate:
        k = tta_translate
        padded = layers.ZeroPadding2D(k)(x)
        copies += [
            layers.Cropping2D(((0, 2 * k), (0, 2 * k)))(padded),
            layers.Cropping2D(((2 * k, 0), (2 * k, 0)))(padded),
        ]
        weights = [0.5, 0.25, 0.25]
    copies += [keras.ops.flip(c, axis=2) for c in copies]
    weights = [w / 2 for w in weights] * 2
    probs = sum(w * classifier(c) for w, c in zip(weights, copies, strict=True))
    return keras.Model(inputs, probs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--translate", type=int, default=1, help="0: the flip alone (two copies)")
    args = ap.parse_args()

    import openvino as ov

    from app.cpu import has_fast_bf16
    from training.contract import INPUT_NAME
    from training.export import export_saved_model
    from training.model import build_classifier, wrap_for_input
    from training.provenance import cpu_description

    classifier = build_classifier(stem="cifar")
    graphs = {
        "one batch": wrap_for_input(classifier, 32, True, args.translate),
        "one call per copy": one_call_per_copy(classifier, args.translate),
    }
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    outputs = [np.asarray(m.predict_on_batch(x)) for m in graphs.values()]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)

    hardware = cpu_description()
    result: dict = {"hardware": hardware, "copies": 6 if args.translate else 2, "ms": {}}
    print(json.dumps(hardware))
    precisions = ["f32"] + (["bf16"] if has_fast_bf16() else [])
    core, tmp = ov.Core(), Path(tempfile.mkdtemp(prefix="tta-batching-"))
    calls = {}
    for i, (name, model) in enumerate(graphs.items()):
        export_saved_model(model, tmp / str(i))
        for precision in precisions:
            compiled = core.compile_model(
                core.read_model(tmp / str(i)),
                "CPU",
                {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"},
            )
            request = compiled.create_infer_request()

            def call(images, request=request):
                request.infer({INPUT_NAME: images})

            calls[name, precision] = call
    # the machines drift: every configuration once per round, the ratio taken within a round
    ratios: dict = {}
    for _ in range(args.rounds):
        for precision in precisions:
            for batch in (1, 16):
                images = np.ascontiguousarray(x[:batch])
                ms = {
                    name: 1000
                    * float(np.median(time_calls(calls[name, precision], images, args.seconds)))
                    for name in graphs
                }
                key = f"{precision}, batch {batch}"
                ratios.setdefault(key, []).append(ms["one call per copy"] / ms["one batch"])
                for name in graphs:
                    result["ms"].setdefault(f"{name}, {key}", []).append(round(ms[name], 2))
    result["speedup_median"] = {k: round(float(np.median(v)), 2) for k, v in ratios.items()}
    for key, times in result["ms"].items():
        print(f"{key:32s} median {np.median(times):7.2f} ms over {len(times)} rounds")
    for key, ratio in result["speedup_median"].items():
        print(f"one batch is {ratio:.2f}x as fast as one call per copy: {key}")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
