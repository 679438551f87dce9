"""Official test and validation accuracy of every served variant, through the server's own
loading code.

    python benchmarks/variant_accuracy.py --model models/cifar10-resnet50/3 \\
        --data /tmp/cifar10/cifar-10-batches-py [--write-card]

Each variant (TensorFlow f32; OpenVINO f32, bf16 where the CPU has AVX512_BF16 or AMX, int8
where the version has one) is loaded by ``app.model.load_served_model`` exactly as
``cifar10-serve --runtime R --precision P`` would, and called in batches of the server's
default cap (16) on all 10,000 test images, and on the version's validation split (the images
its training run held out, as ``cifar10-model quantize`` rebuilds them: what an int8 copy is
chosen on). Reported per variant: both accuracies, top-1 agreement with TensorFlow f32 and the
largest probability difference from it, the calibration (ECE, NLL, mean top-1 probability, on
both splits) and the largest distance of an answer's sum from 1. ``--write-card`` records
the table in the version's model card (``served_variants``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_card import record_in_card  # noqa: E402

from app.cpu import cpu_report, has_fast_bf16  # noqa: E402
from app.model import load_served_model  # noqa: E402
from app.runtimes import INT8_DIR  # noqa: E402
from training.calibration import calibration_metrics  # noqa: E402
from training.data import load_cifar10  # noqa: E402
from training.quantize import version_splits  # noqa: E402


def variants(version_dir: Path) -> list[tuple[str, str]]:
    out = [("tensorflow", "f32"), ("openvino", "f32")]
    if has_fast_bf16():
        out.append(("openvino", "bf16"))
    if (version_dir / INT8_DIR / "model.xml").is_file():
        out.append(("openvino", "int8"))
    return out


def probabilities(version_dir: Path, runtime: str, precision: str, x: np.ndarray, batch: int):
    model = load_served_model(version_dir.parent, int(version_dir.name), runtime, precision)
    start = time.perf_counter()
    probs = np.concatenate([model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])
    return probs, model.class_names, time.perf_counter() - start


def difference_spread(probs, reference) -> dict:
    """How far each answer is from TensorFlow f32's (its largest difference over the classes):
    the share of answers within 0.01, the 99th percentile and the mean."""
    per_answer = np.abs(probs - reference).max(axis=1)
    return {
        "answers_within_0.01_of_tensorflow_f32": float((per_answer <= 0.01).mean()),
        "p99_abs_probability_difference": float(np.percentile(per_answer, 99)),
        "mean_abs_probability_difference": float(per_answer.mean()),
    }


def calibrated(probs, labels, val_probs, val_labels) -> dict:
    """How well the variant's probabilities match how often it is right (ECE, NLL, mean top-1
    probability; test, and validation with a prefix) and the largest distance of an answer's
    sum from 1."""
    test = calibration_metrics(probs, labels)
    val = calibration_metrics(val_probs, val_labels)
    return {
        **{k: test[k] for k in ("ece", "nll", "mean_confidence")},
        **{f"validation_{k}": val[k] for k in ("ece", "nll", "mean_confidence")},
        "max_sum_error": max(test["max_sum_error"], val["max_sum_error"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a version folder")
    ap.add_argument("--data", required=True, help="CIFAR-10 (official layout)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--write-card", action="store_true")
    args = ap.parse_args()
    test = load_cifar10(args.data).test
    card = json.loads((args.model / "model_card.json").read_text())
    validation = version_splits(args.data, card)[1]
    rows, reference = [], None
    for runtime, precision in variants(args.model):
        probs, names, seconds = probabilities(args.model, runtime, precision, test.x, args.batch)
        val_probs, _, _ = probabilities(args.model, runtime, precision, validation.x, args.batch)
        pred = probs.argmax(1)
        if reference is None:
            reference = probs
        rows.append(
            {
                "runtime": runtime,
                "precision": precision,
                "test_accuracy": float((pred == test.y).mean()),
                "validation_accuracy": float((val_probs.argmax(1) == validation.y).mean()),
                "test_per_class_accuracy": {
                    name: float((pred[test.y == i] == i).mean()) for i, name in enumerate(names)
                },
                "top1_agreement_with_tensorflow_f32": float((pred == reference.argmax(1)).mean()),
                "max_abs_probability_difference": float(np.abs(probs - reference).max()),
                **difference_spread(probs, reference),
                **calibrated(probs, test.y, val_probs, validation.y),
                "seconds": round(seconds, 1),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if "per_class" not in k}), flush=True)
    result = {
        "test_images": len(test.y),
        "validation_images": len(validation.y),
        "batch": args.batch,
        "hardware": cpu_report(),
        "command": "python benchmarks/variant_accuracy.py " + " ".join(sys.argv[1:]),
        "variants": rows,
    }
    print(
        "\n| runtime | precision | official test accuracy | validation accuracy "
        "| top-1 agreement with TF f32 | ECE | NLL | largest difference | largest sum error |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['precision']} | {r['test_accuracy']:.2%} "
            f"| {r['validation_accuracy']:.2%} | {r['top1_agreement_with_tensorflow_f32']:.2%} "
            f"| {r['ece']:.2%} | {r['nll']:.3f} | {r['max_abs_probability_difference']:.4f} "
            f"| {r['max_sum_error']:.1e} |"
        )
    if args.write_card:
        record_in_card(args.model, "served_variants", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
