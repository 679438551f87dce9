"""The upload-forms evaluation: each form changes the pixels as it claims, decodes through the
server's own code, and the script's clean-PNG accuracy is the model's accuracy on the raw test
images (a lossless round trip)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from app.model import load_served_model
from tests.helpers import ROOT, run_upload_forms
from training.data import load_cifar10
from training.quantize import version_splits

sys.path.insert(0, str(ROOT / "benchmarks"))
import upload_forms  # noqa: E402


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """One 32x32 image with structure (gradients and an edge), so that codecs have work."""
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=-1).astype(np.uint8)
    img[8:24, 8:24] = (250, 20, 20)
    return img[None]


def _decoded(photo, form):
    return upload_forms.as_uploaded(photo, form, (32, 32))[0].astype(int)


def test_lossless_forms_give_back_the_pixels(photo):
    for form in ("png", "rgba_png"):
        assert np.array_equal(_decoded(photo, form), photo[0])
    upscaled = _decoded(photo, "upscaled_8x_png")
    assert np.abs(upscaled - photo[0]).mean() < 6  # Lanczos back down from 256 px


def test_lossy_forms_change_pixels_and_more_at_lower_quality(photo):
    error = {f: np.abs(_decoded(photo, f) - photo[0]).mean() for f in upload_forms.FORMS}
    assert error["jpeg_q50"] > error["jpeg_q75"] > 0
    assert error["webp_q80"] > 0


def test_grayscale_has_equal_channels(photo):
    gray = _decoded(photo, "grayscale_png")
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_the_exif_rotated_jpeg_is_turned_back_by_the_server(photo):
    data = upload_forms.exif_rotated_jpeg(upload_forms.Image.fromarray(photo[0]))
    stored = np.asarray(upload_forms.Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(stored.astype(int) - photo[0]).mean() > 20  # stored a quarter turn away
    assert np.abs(_decoded(photo, "exif_rotated_jpeg") - photo[0]).mean() < 6


def _report(model_root, cifar_dir, *args: str) -> subprocess.CompletedProcess:
    """The script on the tiny model in OpenVINO f32, with ``args`` after the common ones."""
    return run_upload_forms(
        "--model",
        str(model_root / "1"),
        "--data",
        str(cifar_dir),
        "--runtime",
        "openvino",
        "--precision",
        "f32",
        *args,
    )


def _clean_accuracy(model_root, x: np.ndarray, y: np.ndarray) -> float:
    model = load_served_model(model_root, 1, "openvino", "f32")
    return float((model.predict(x).argmax(1) == y).mean())


def test_the_report_covers_every_form_and_clean_matches_the_raw_images(
    tiny_model_root, cifar_dir, tmp_path
):
    out = tmp_path / "forms.json"
    proc = _report(tiny_model_root, cifar_dir, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["forms"]) == set(upload_forms.FORMS)
    test = load_cifar10(str(cifar_dir)).test
    raw_accuracy = _clean_accuracy(tiny_model_root, test.x, test.y)
    assert result["forms"]["png"]["accuracy"] == pytest.approx(raw_accuracy)
    assert result["forms"]["png"]["drop_points"] == 0 and result["test_images"] == len(test.y)
    for r in result["forms"].values():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["answers_changed"] <= 1


def test_the_validation_split_is_the_versions_held_out_images(tiny_model_root, cifar_dir, tmp_path):
    out = tmp_path / "forms_val.json"
    proc = _report(tiny_model_root, cifar_dir, "--split", "val", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    card = json.loads((tiny_model_root / "1" / "model_card.json").read_text())
    val = version_splits(str(cifar_dir), card)[1]
    assert result["validation_images"] == len(val.y) > 0 and "test_images" not in result
    raw_accuracy = _clean_accuracy(tiny_model_root, val.x, val.y)
    assert result["forms"]["png"]["accuracy"] == pytest.approx(raw_accuracy)
    # the card holds the test set's table only
    refused = _report(tiny_model_root, cifar_dir, "--split", "val", "--write-card")
    assert refused.returncode == 2 and "test set's table only" in refused.stderr
