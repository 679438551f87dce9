"""How much a little CPU work elsewhere slows the model: the cost the server's own work adds.

    python benchmarks/cpu_contention.py [--model-dir models/cifar10-resnet50] [--share 0.1]

Alternates, in rounds, the bare SavedModel at one batch size alone and with a separate process
that keeps ``--share`` of one core busy in short bursts (about what the server's event loop and
the load generator take at 32 clients). TensorFlow splits each operation over all cores, so a
core taken briefly stalls the whole operation: the slowdown can exceed the CPU share taken.
Throughput is images done per second of wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import time_calls  # noqa: E402

BURNER = """
import sys, time
share, period = float(sys.argv[1]), 0.011
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < share * period:
        pass
    time.sleep(period * (1 - share))
"""


def throughput(predict, x: np.ndarray, seconds: float) -> float:
    times = time_calls(predict, x, seconds, warmup=0)
    return len(x) * len(times) / sum(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--share", type=float, default=0.1, help="of one core, in (0, 1)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()

    from app.model import load_served_model

    model = load_served_model(args.model_dir)
    h, w = model.input_size
    x = np.random.default_rng(0).integers(0, 256, (args.batch, h, w, 3), dtype=np.uint8)
    for _ in range(3):
        model.predict(x)
    ratios = []
    print(f"| round | alone, images/s | with {args.share:.0%} of a core busy | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for i in range(1, args.rounds + 1):
        alone = throughput(model.predict, x, args.seconds)
        burner = subprocess.Popen([sys.executable, "-c", BURNER, str(args.share)])
        try:
            time.sleep(0.3)
            busy = throughput(model.predict, x, args.seconds)
        finally:
            burner.kill()
            burner.wait()
        ratios.append(busy / alone)
        print(f"| {i} | {alone:.1f} | {busy:.1f} | {busy / alone:.2f} |")
    cores = os.cpu_count() or 1
    print(
        f"\nmedian ratio {np.median(ratios):.2f}: {args.share:.0%} of one core "
        f"({args.share / cores:.0%} of {cores} cores) elsewhere cost the model "
        f"{1 - np.median(ratios):.0%} of its throughput"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
