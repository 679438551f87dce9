"""What the training recipe's parts cost per step on this CPU: a step of each stem, reading the
weights for the weight average, and the upload augmentations.

    python benchmarks/training_costs.py [--batch 128] [--precision mixed_bfloat16] [--repeats 3]

Prints the CPU first; compare only within one run, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cpu import cpu_report  # noqa: E402


def seconds(fn, repeats: int) -> float:
    """Best of ``repeats`` calls, after one to warm up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", default="mixed_bfloat16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    hw = cpu_report()
    print(
        f"machine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}"
    )
    import keras

    from training.augment import UploadAugmentation
    from training.model import build_classifier, wrap_for_input

    keras.mixed_precision.set_global_policy(args.precision)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]
    for stem, size in (("imagenet", 64), ("cifar", 32), ("cifar-full", 32)):
        classifier = build_classifier(stem=stem, zero_init_residual=True)
        model = wrap_for_input(classifier, size)
        model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
        step = seconds(lambda m=model: m.train_on_batch(x, y), args.repeats)
        print(f"training step, {stem} stem at {size} px, batch {args.batch}: {step:.3f} s")
    read = seconds(classifier.get_weights, args.repeats)
    print(f"reading every weight (the weight average's update): {read:.3f} s")
    upload = UploadAugmentation(0.2, 0.1, 0.3, (30, 95))
    augment = seconds(lambda: upload(x, np.random.default_rng(1)), args.repeats)
    print(
        f"upload augmentations (jitter 0.2, gray 0.1, JPEG 0.3), batch {args.batch}: "
        f"{augment * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
