"""Two versions of the model side by side: images per second of every served variant, bare.

    python benchmarks/version_speed.py --model-dir models/cifar10-resnet50 --versions 3,4 \\
        [--variants openvino:int8,openvino:bf16] [--rounds 7] [--seconds 2]

What a new version costs against the one it replaces on the same CPU (for example version 4,
version 3 calibrated: the temperature's few operations, and an int8 copy that keeps its head in
float). Each variant of each version is loaded by the server's own loader
(``app.model.load_served_model``), then timed in interleaved rounds (every version back to
back within a round, the order alternating) at the server's batch cap (16) and at batch 1, and
reported as the median over the rounds of images per second and of the ratio to the first
version. Prints the CPU first; run it on an otherwise idle machine. ``--write-card`` records
the result in the last version's card (``speed_against_previous``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_card import record_in_card  # noqa: E402
from timing import time_calls  # noqa: E402

from app.cpu import cpu_report, has_fast_bf16  # noqa: E402
from app.model import load_served_model  # noqa: E402
from app.runtimes import INT8_DIR  # noqa: E402


def default_variants(version_dirs: list[Path]) -> list[tuple[str, str]]:
    """Every variant that all the versions serve on this CPU."""
    out = [("tensorflow", "f32"), ("openvino", "f32")]
    if has_fast_bf16():
        out.append(("openvino", "bf16"))
    if all((d / INT8_DIR / "model.xml").is_file() for d in version_dirs):
        out.append(("openvino", "int8"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--versions", required=True, help="N,M,...: the first is the baseline")
    ap.add_argument("--variants", help="runtime:precision,... (default: all that apply here)")
    ap.add_argument("--batches", default="16,1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--write-card",
        action="store_true",
        help="record the result in the last version's card (speed_against_previous)",
    )
    args = ap.parse_args()
    versions = [int(v) for v in args.versions.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    if args.variants:
        variants = [tuple(v.split(":", 1)) for v in args.variants.split(",")]
    else:
        variants = default_variants([args.model_dir / str(v) for v in versions])
    hw = cpu_report()
    print(
        f"machine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}",
        flush=True,
    )
    x = np.random.default_rng(0).integers(0, 256, (max(batches), 32, 32, 3), dtype=np.uint8)
    rows = []
    for runtime, precision in variants:
        models = {v: load_served_model(args.model_dir, v, runtime, precision) for v in versions}
        rates: dict[tuple[int, int], list[float]] = {(v, b): [] for v in versions for b in batches}
        for r in range(args.rounds):
            order = versions if r % 2 == 0 else versions[::-1]
            for batch in batches:
                for v in order:
                    times = time_calls(models[v].predict, x[:batch], args.seconds)
                    rates[v, batch].append(batch / statistics.median(times))
        for batch in batches:
            base = rates[versions[0], batch]
            for v in versions:
                row = {
                    "runtime": runtime,
                    "precision": precision,
                    "batch": batch,
                    "version": v,
                    "images_per_s": statistics.median(rates[v, batch]),
                    "ratio_to_first": statistics.median(
                        a / b for a, b in zip(rates[v, batch], base, strict=True)
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        del models
    header = [f"v{v} img/s" for v in versions] + [f"v{v} / v{versions[0]}" for v in versions[1:]]
    print("\n| runtime | precision | batch | " + " | ".join(header) + " |")
    print("| --- | --- | ---: |" + " ---: |" * (2 * len(versions) - 1))
    for runtime, precision in variants:
        for batch in batches:
            mine = {
                r["version"]: r
                for r in rows
                if (r["runtime"], r["precision"], r["batch"]) == (runtime, precision, batch)
            }
            cells = [f"{mine[v]['images_per_s']:.0f}" for v in versions]
            cells += [f"{mine[v]['ratio_to_first']:.3f}" for v in versions[1:]]
            print(f"| {runtime} | {precision} | {batch} | " + " | ".join(cells) + " |")
    result = {
        "hardware": hw,
        "versions": versions,
        "command": "python benchmarks/version_speed.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.write_card:
        record_in_card(args.model_dir / str(versions[-1]), "speed_against_previous", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
