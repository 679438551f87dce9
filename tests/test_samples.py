"""What the README says the shipped model answers for ``samples/``: each OpenVINO variant
labels the same nine correctly, and the quick start's example answer is the default's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cpu import has_fast_bf16
from app.model import load_served_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.png"))
README = (ROOT / "README.md").read_text()
README_WORDS = " ".join(README.split())  # line breaks do not matter


def answers(precision: str) -> dict[str, tuple[str, float]]:
    model = load_served_model(ROOT / "models" / "cifar10-resnet50", precision=precision)
    out = {}
    for path in SAMPLES:
        probs = model.predict(np.asarray(Image.open(path).convert("RGB"))[np.newaxis])[0]
        out[path.stem] = (model.class_names[int(probs.argmax())], float(probs.max()))
    return out


PRECISIONS = ["auto", "f32", "int8"] + (["bf16"] if has_fast_bf16() else [])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_variant_gets_the_samples_the_readme_says(precision):
    claim = "9 of the 10 correctly in every variant (`cat.png` comes out as `airplane`)"
    assert claim in README_WORDS
    wrong = {name: label for name, (label, _) in answers(precision).items() if label != name}
    assert wrong == {"cat": "airplane"}


def test_the_quick_starts_example_answer_is_the_default_variants():
    shown = re.search(
        r'\{"filename": "ship.png", "label": "ship", "probability": ([0-9.]+),', README
    )
    assert shown, "the quick start's example answer is gone"
    label, probability = answers("auto")["ship"]
    # int8 kernels differ a little between instruction sets (VNNI, AMX, AVX2)
    assert label == "ship" and probability == pytest.approx(float(shown.group(1)), abs=0.02)
