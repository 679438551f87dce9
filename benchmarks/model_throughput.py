"""CPU inference throughput of the exported model, for the model card.

    python benchmarks/model_throughput.py --saved-model models/cifar10-resnet50/3 \
        [--run RUN_DIR] [--write-card]

float32: the SavedModel itself, through its serving signature (what the server runs).
bfloat16: the same network rebuilt from the run's weights under Keras' ``mixed_bfloat16``
policy (the exported graph is float32; this measures what a bf16 export would gain on CPUs
with AVX-512 BF16). Images/s = batch size / median time of one call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import time_calls  # noqa: E402


def images_per_second(call, batch: int, seconds: float) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    return batch / float(np.median(time_calls(call, x, seconds)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saved-model", type=Path, required=True)
    ap.add_argument("--run", type=Path, help="training run, for the bfloat16 measurement")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--write-card", action="store_true", help="record the result in the card")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    from training.evaluate import saved_model_predictor
    from training.provenance import cpu_description

    card_path = args.saved_model / "model_card.json"
    card = json.loads(card_path.read_text())
    result = {"hardware": cpu_description(), "images_per_second": {}}
    served = saved_model_predictor(args.saved_model)
    result["images_per_second"]["float32_savedmodel"] = {
        str(b): round(images_per_second(served, b, args.seconds), 1) for b in batches
    }
    if args.run:
        from training.run import load_run_model

        model, _ = load_run_model(
            args.run,
            card["internal_size"],
            card.get("tta_flip", False),
            "mixed_bfloat16",
            tta_translate=card.get("tta_translate", 0),
        )
        result["images_per_second"]["bfloat16_keras"] = {
            str(b): round(images_per_second(model.predict_on_batch, b, args.seconds), 1)
            for b in batches
        }
    result["command"] = "python " + " ".join(
        [
            str(Path(sys.argv[0]).relative_to(ROOT))
            if Path(sys.argv[0]).is_absolute()
            else sys.argv[0]
        ]
        + sys.argv[1:]
    )
    print(json.dumps(result, indent=2))
    if args.write_card:
        card["inference_throughput"] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
