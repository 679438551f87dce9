"""Accuracy on the official test set as users upload it: every test image re-encoded in the
forms people send (JPEG at two qualities, WebP, grayscale, a phone-style EXIF-rotated JPEG, an
upscaled PNG, RGBA), decoded by the server's own image code (``app.images``: EXIF orientation,
mode conversion, Lanczos resize) and classified by the served model.

    python benchmarks/upload_forms.py --model models/cifar10-resnet50/3 \\
        --data /tmp/cifar10/cifar-10-batches-py [--runtime openvino --precision bf16] \\
        [--split val] [--limit N] [--write-card] [--json FILE]
    python benchmarks/upload_forms.py --run RUN_DIR --split val [--tta-flip [--tta-translate 1]] \\
        --data ...

Reported per form: accuracy, its drop against the clean PNGs, and the share of images whose
top-1 answer changed. ``--write-card`` records the table in the version's model card
(``upload_forms``). ``--split val`` measures the version's validation split instead (the
training images its run held out, as its card records them), so that recipes can be compared
on uploads without touching the test set; only the test set's table goes into the card.
``--run`` measures a training run (or an ``interpolate`` result) before it is exported, in
Keras at float32 with the test-time averages given, as ``export`` would serve it: exporting
measures the test set, so candidates are compared this way first.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_card import record_in_card  # noqa: E402

from app.cpu import cpu_report  # noqa: E402
from app.images import decode_opened, open_upload  # noqa: E402
from app.model import load_served_model  # noqa: E402
from training.data import IMAGE_SHAPE, Split, load_cifar10  # noqa: E402
from training.evaluate import evaluation_split  # noqa: E402
from training.quantize import version_splits  # noqa: E402
from training.run import load_run_model  # noqa: E402

EXIF_ORIENTATION = 0x0112


def _save(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def exif_rotated_jpeg(img: Image.Image) -> bytes:
    """As a phone stores a portrait photo: the pixels rotated a quarter turn, and EXIF
    orientation 6 telling viewers to turn them back (JPEG quality 90)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return _save(img.rotate(90, expand=True), "JPEG", quality=90, exif=exif.tobytes())


FORMS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda img: _save(img, "PNG"),
    "jpeg_q75": lambda img: _save(img, "JPEG", quality=75),
    "jpeg_q50": lambda img: _save(img, "JPEG", quality=50),
    "webp_q80": lambda img: _save(img, "WEBP", quality=80),
    "grayscale_png": lambda img: _save(img.convert("L"), "PNG"),
    "exif_rotated_jpeg": exif_rotated_jpeg,
    "upscaled_8x_png": lambda img: _save(
        img.resize((img.width * 8, img.height * 8), Image.Resampling.BICUBIC), "PNG"
    ),
    "rgba_png": lambda img: _save(img.convert("RGBA"), "PNG"),
}


def as_uploaded(images: np.ndarray, form: str, size: tuple[int, int]) -> np.ndarray:
    """``images`` encoded in ``form``, then decoded exactly as the server decodes an upload."""
    encode = FORMS[form]
    out = np.empty((len(images), *size, 3), dtype=np.uint8)
    for i, pixels in enumerate(images):
        data = encode(Image.fromarray(pixels))
        out[i] = decode_opened(open_upload(data, 40_000_000, form), size, form)
    return out


@dataclass
class Classifier:
    """What is measured: a batch of uint8 images in, probabilities out, and what it is."""

    predict: Callable[[np.ndarray], np.ndarray]
    input_size: tuple[int, int]
    runtime: str
    precision: str
    images: Split


def served_version(args: argparse.Namespace) -> Classifier:
    """An exported version, served as the server serves it."""
    if args.split == "val":
        card = json.loads((args.model / "model_card.json").read_text())
        images = version_splits(args.data, card)[1]
    else:
        images = load_cifar10(args.data).test
    model = load_served_model(args.model.parent, int(args.model.name), args.runtime, args.precision)
    return Classifier(
        model.predict, model.input_size, model.runtime.name, model.runtime.precision, images
    )


def training_run(args: argparse.Namespace) -> Classifier:
    """A run directory's final weights with the given test-time averages, in Keras."""
    model, cfg = load_run_model(args.run, None, args.tta_flip, tta_translate=args.tta_translate)
    images = evaluation_split(args.data, args.split, cfg).split
    return Classifier(model.predict_on_batch, IMAGE_SHAPE[:2], "keras", "float32", images)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="a version folder")
    which.add_argument("--run", type=Path, help="a training run directory (not exported)")
    ap.add_argument("--tta-flip", action="store_true", help="with --run: average the mirror")
    ap.add_argument("--tta-translate", type=int, default=0, help="with --run and --tta-flip")
    ap.add_argument("--data", required=True, help="CIFAR-10 (official layout)")
    ap.add_argument("--runtime", default="auto", help="with --model (a run is measured in Keras)")
    ap.add_argument("--precision", default="auto", help="with --model")
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument(
        "--forms",
        type=lambda text: text.split(","),
        default=list(FORMS),
        help=f"comma-separated, png first (default: all: {','.join(FORMS)})",
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--write-card", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.write_card and (args.split != "test" or args.run):
        ap.error("--write-card records an exported version's official test set's table only")
    if args.forms[0] != "png" or not set(args.forms) <= set(FORMS):
        ap.error(f"--forms: png (the clean reference) first, then any of {', '.join(FORMS)}")
    if args.write_card and args.forms != list(FORMS):
        ap.error("--write-card records every form")
    if (args.tta_flip or args.tta_translate) and not args.run:
        ap.error("--tta-flip and --tta-translate are for --run (a version has its own)")
    model = training_run(args) if args.run else served_version(args)
    x, y = model.images.x[: args.limit], model.images.y[: args.limit]
    rows, clean = {}, None
    for form in args.forms:
        start = time.perf_counter()
        pixels = as_uploaded(x, form, model.input_size)
        probs = np.concatenate(
            [model.predict(pixels[i : i + args.batch]) for i in range(0, len(pixels), args.batch)]
        )
        pred = probs.argmax(1)
        clean = pred if clean is None else clean
        rows[form] = {
            "accuracy": float((pred == y).mean()),
            "drop_points": round(100 * float((clean == y).mean() - (pred == y).mean()), 2),
            "answers_changed": float((pred != clean).mean()),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(form, json.dumps(rows[form]), flush=True)
    result = {
        **({"test_images": len(y)} if args.split == "test" else {"validation_images": len(y)}),
        "runtime": model.runtime,
        "precision": model.precision,
        "hardware": cpu_report(),
        "command": "python benchmarks/upload_forms.py " + " ".join(sys.argv[1:]),
        "forms": rows,
    }
    what = "official test" if args.split == "test" else "validation"
    print(f"\n{model.runtime} {model.precision}, {len(y)} {what} images:")
    print("\n| upload form | accuracy | drop against clean PNG, points | answers changed |")
    print("| --- | ---: | ---: | ---: |")
    for form, r in rows.items():
        print(
            f"| {form} | {r['accuracy']:.2%} | {r['drop_points']:.2f} "
            f"| {r['answers_changed']:.2%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.write_card:
        record_in_card(args.model, "upload_forms", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
