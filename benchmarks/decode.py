"""What decoding one upload costs the event loop: Pillow's general path against the libspng
fast path for plain PNGs (``app/png.py``), on the same files.

    python benchmarks/decode.py [--data CIFAR_DIR] [--images 64] [--number 2000]

Encodes the first ``--images`` CIFAR-10 test images (default: ``samples/``) as PNG with
Pillow's defaults, checks that both paths give the same pixels, and times each path per image
(``timeit``, best of 5 repeats of ``--number`` calls), then prints the medians over the
images and the CPU. Compare only within one run.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving import png_payloads  # noqa: E402

from app.cpu import cpu_report  # noqa: E402
from app.images import decode_opened, open_upload  # noqa: E402
from app.png import decode_plain_png  # noqa: E402

MAX_PIXELS = 40_000_000
SIZE = (32, 32)  # CIFAR-10's, the model's input size


def per_call_us(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="CIFAR-10 folder (default: samples/)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--number", type=int, default=2000, help="calls per timing")
    args = ap.parse_args()
    hw = cpu_report()
    print(
        f"machine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}"
    )
    pillow, fast = [], []
    for png in png_payloads(args.data, args.images):
        expected = decode_opened(open_upload(png, MAX_PIXELS), SIZE)
        plain = decode_plain_png(png, SIZE, MAX_PIXELS)
        if plain is None or not np.array_equal(plain, expected):
            raise SystemExit("the fast path did not decode a plain PNG as Pillow does")
        pillow.append(
            per_call_us(lambda p=png: decode_opened(open_upload(p, MAX_PIXELS), SIZE), args.number)
        )
        fast.append(per_call_us(lambda p=png: decode_plain_png(p, SIZE, MAX_PIXELS), args.number))
    print(f"{len(pillow)} images as PNG (Pillow's defaults), median per decode:")
    print(f"  Pillow (open_upload + decode_opened): {np.median(pillow):.1f} us")
    print(f"  libspng fast path (decode_plain_png): {np.median(fast):.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
