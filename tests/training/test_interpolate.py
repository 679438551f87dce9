"""``interpolate``: a run whose weights lie between a fine-tuned run and its source (WiSE-FT)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_upload_forms, tiny_config
from training.cli import main
from training.config import ConfigError
from training.evaluate import evaluation_split
from training.export import export_run
from training.interpolate import interpolate_run
from training.run import load_run_classifier, load_run_model
from training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fine_tuned_run(trained_run, cifar_dir, tmp_path_factory):
    """The tiny run, trained one more epoch from its own weights."""
    run_dir = tmp_path_factory.mktemp("fine-tuned")
    train(tiny_config(cifar_dir, run_dir, init_from=str(trained_run), learning_rate=0.05))
    return run_dir


def _weights(run_dir) -> list[np.ndarray]:
    return load_run_classifier(run_dir)[0].get_weights()


def test_alpha_walks_the_line_from_the_source_to_the_fine_tuned_weights(
    trained_run, fine_tuned_run, tmp_path
):
    source, tuned = _weights(trained_run), _weights(fine_tuned_run)
    assert any(not np.allclose(s, t) for s, t in zip(source, tuned, strict=True))
    ends = {a: _weights(interpolate_run(fine_tuned_run, a, tmp_path / str(a))) for a in (0, 1)}
    for mine, theirs in zip(ends[0], source, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(ends[1], tuned, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    middle = _weights(interpolate_run(fine_tuned_run, 0.25, tmp_path / "quarter"))
    moved = 0
    for m, s, t in zip(middle, source, tuned, strict=True):  # BatchNorm statistics too
        np.testing.assert_allclose(m, 0.75 * s + 0.25 * t, rtol=1e-5, atol=1e-6)
        moved += not np.allclose(s, t)
    assert moved > 100, moved  # most of ResNet50's 320 arrays changed in the fine-tune
    record = json.loads((tmp_path / "quarter" / "interpolation.json").read_text())
    assert record["alpha"] == 0.25 and record["source"] == str(trained_run)


def test_its_export_card_says_what_it_is_made_of(fine_tuned_run, tmp_path):
    run = interpolate_run(fine_tuned_run, 0.5, tmp_path / "wise")
    card = json.loads(
        (
            export_run(run, tmp_path / "models", "c10", calibrate="none").path / "model_card.json"
        ).read_text()
    )
    assert card["interpolation"]["alpha"] == 0.5
    source = card["weights_source"]
    assert source.startswith("fine-tuned from ") and "random initialization" not in source
    assert "(WiSE-FT, alpha 0.5): 0.5 x the source's weights + 0.5 x the fine-tuned run's" in (
        source
    )
    assert str(fine_tuned_run) in source


def test_what_cannot_be_interpolated_is_refused_in_one_line(
    trained_run, fine_tuned_run, tmp_path, capsys
):
    with pytest.raises(ConfigError, match="not a fine-tuned run"):
        interpolate_run(trained_run, 0.5, tmp_path / "a")
    with pytest.raises(ConfigError, match="between 0"):
        interpolate_run(fine_tuned_run, 1.5, tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    argv = ["interpolate", "--run", str(fine_tuned_run), "--alpha", "0.5", "--out"]
    assert main([*argv, str(tmp_path / "full")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'full'}: exists and is not empty"
    ]
    assert main([*argv, str(tmp_path / "new")]) == 0
    assert json.loads(capsys.readouterr().out) == {"run": str(tmp_path / "new"), "alpha": 0.5}


def test_the_upload_forms_report_measures_a_run_on_validation_before_export(
    fine_tuned_run, cifar_dir, tmp_path
):
    """``benchmarks/upload_forms.py --run``: candidates compared on uploads without exporting
    (which would measure the test set); its clean PNGs give the run's own validation
    accuracy with the same test-time averages."""
    run = interpolate_run(fine_tuned_run, 0.5, tmp_path / "wise")
    out = tmp_path / "forms.json"
    argv = ["--run", str(run), "--data", str(cifar_dir), "--split", "val", "--tta-flip"]
    proc = run_upload_forms(*argv, "--forms", "png,jpeg_q75", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    model, cfg = load_run_model(run, tta_flip=True)
    val = evaluation_split(str(cifar_dir), "val", cfg).split
    expected = float((model.predict_on_batch(val.x).argmax(1) == val.y).mean())
    assert result["validation_images"] == len(val.y) > 0
    assert list(result["forms"]) == ["png", "jpeg_q75"]
    assert result["forms"]["png"]["accuracy"] == pytest.approx(expected)
    assert (result["runtime"], result["precision"]) == ("keras", "float32")
    refused = run_upload_forms(*argv, "--write-card")
    assert refused.returncode == 2 and "exported version's" in refused.stderr
    refused = run_upload_forms(*argv, "--forms", "jpeg_q75,png")
    assert refused.returncode == 2 and "png (the clean reference) first" in refused.stderr
