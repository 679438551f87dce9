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


def readme_claim() -> dict[str, str]:
    """The samples the README says every variant gets wrong, each with the label it gets:
    "labels 9 of the 10 correctly in every variant (`cat.png` comes out as `airplane`)", or
    "labels all 10 correctly in every variant"."""
    claim = re.search(
        r"labels (all 10|\d+ of the 10) correctly in every variant( \(([^)]*)\))?", README_WORDS
    )
    assert claim, "the README no longer says what the shipped model answers for samples/"
    wrong = dict(re.findall(r"`(\w+)\.png` comes out as `(\w+)`", claim.group(3) or ""))
    right = 10 if claim.group(1) == "all 10" else int(claim.group(1).split()[0])
    assert len(SAMPLES) == 10 and right + len(wrong) == 10, claim.group(0)
    return wrong


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_variant_gets_the_samples_the_readme_says(precision):
    wrong = {name: label for name, (label, _) in answers(precision).items() if label != name}
    assert wrong == readme_claim()


def test_the_quick_starts_example_answer_is_the_default_variants():
    shown = re.search(
        r'\{"filename": "ship.png", "label": "ship", "probability": ([0-9.]+),', README
    )
    assert shown, "the quick start's example answer is gone"
    label, probability = answers("auto")["ship"]
    # int8 kernels differ a little between instruction sets (VNNI, AMX, AVX2)
    assert label == "ship" and probability == pytest.approx(float(shown.group(1)), abs=0.02)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_variants_answers_are_probabilities(precision):
    """Each answer's ten probabilities sum to 1 (version 3's int8 copy summed to 0.967-1.006,
    its softmax and test-time average computed in int8)."""
    model = load_served_model(ROOT / "models" / "cifar10-resnet50", precision=precision)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in SAMPLES])
    probs = model.predict(images).astype(np.float64)
    assert probs.shape == (10, 10) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
