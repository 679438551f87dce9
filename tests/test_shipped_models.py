"""The models shipped in ``models/`` are complete, their readable cards are generated from their
JSON cards, and the README and docs state the cards' numbers.

No TensorFlow here: these read files only, so a version that lost a file, a card whose
measurements disagree with each other, or a README left behind by a new version fails fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "cifar10-resnet50"
VERSIONS = sorted((p for p in MODEL_DIR.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def card(version: Path) -> dict:
    return json.loads((version / "model_card.json").read_text())


def section(page: str, title: str) -> str:
    """The ``## title`` section of ``page`` (a path from the repository root)."""
    text = (ROOT / page).read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def pct(x: float, digits: int, space: str = "") -> str:
    return f"{x * 100:.{digits}f}{space}%"


def test_there_is_a_shipped_model():
    assert VERSIONS, f"no numbered version under {MODEL_DIR}"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_each_version_is_complete_and_its_card_consistent(version):
    c = card(version)
    assert str(c["version"]) == version.name
    assert (version / "saved_model.pb").is_file()
    assert any((version / "variables").glob("variables.data-*"))
    assert (version / "variables" / "variables.index").is_file()
    assert c["signature"]["input"]["name"] and c["signature"]["output"]["shape"] == [None, 10]
    assert len(c["class_names"]) == 10
    metrics = c["metrics"]
    per_class = metrics["test_per_class_accuracy"]
    assert list(per_class) == c["class_names"]
    # the test set's accuracy is the mean of the per-class recalls (1,000 images per class)
    assert metrics["test_accuracy"] == pytest.approx(sum(per_class.values()) / 10, abs=1e-4)
    assert c["validation_selection"]["chosen"] in c["validation_selection"]["accuracy"]
    int8_xml = version / "openvino-int8" / "model.xml"
    if int8_xml.is_file():
        assert (version / "openvino-int8" / "model.bin").is_file()
        assert c["int8"]["reference_test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    variants = {(v["runtime"], v["precision"]): v for v in c["served_variants"]["variants"]}
    # the served-variant benchmark reran the exported SavedModel: it must agree with export
    assert variants["tensorflow", "f32"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert ("openvino", "int8") in variants or not int8_xml.is_file()


def test_readme_and_docs_state_the_newest_versions_numbers():
    """The README's headline and model section, the runtimes page and the training page are
    about the version the server loads (the newest), and every number they give is its card's."""
    newest = VERSIONS[-1]
    c = card(newest)
    m = c["metrics"]
    readme = (ROOT / "README.md").read_text()
    headline = readme[: readme.index("\n## Quick start\n")]
    assert f"| the shipped model, version {newest.name} |" in headline
    assert f"**{pct(m['test_accuracy'], 2, ' ')}**" in headline
    assert f"models/cifar10-resnet50/{newest.name}/README.md" in headline
    model = section("README.md", "The model")
    assert f"Version {newest.name} ([`models/cifar10-resnet50/{newest.name}/`]" in model
    assert f"**{pct(m['test_accuracy'], 2, ' ')}**" in model
    averages = "averages" if c.get("tta_translate") else "flip"
    assert f"{pct(m['test_plain_accuracy'], 2, ' ')} without the test-time {averages}" in model
    weakest = min(m["test_per_class_accuracy"], key=m["test_per_class_accuracy"].get)
    recall = pct(m["test_per_class_accuracy"][weakest], 1, " ")
    assert f"weakest class {weakest} ({recall}" in model
    hours = c["training"]["summary"]["wall_time_s"] / 3600
    assert f"({hours:.2f} h, {c['training']['summary']['epochs_completed']} epochs" in model
    assert f"[`{c['config_file']}`]" in model
    assert f'"version": {newest.name}}}' in section("README.md", "Quick start")
    runtimes = (ROOT / "docs" / "runtimes.md").read_text()
    assert f"models/cifar10-resnet50/{newest.name} " in runtimes
    for variant in c["served_variants"]["variants"]:
        row = f"| {variant['precision']}"
        assert any(
            row in line and f"| {variant['test_accuracy'] * 100:.2f} % |" in line
            for line in runtimes.splitlines()
        ), variant
    shipped = section("docs/training.md", f"The shipped model: version {newest.name}")
    assert f"**{pct(m['test_accuracy'], 2)}**" in shipped
    for name, recall in m["test_per_class_accuracy"].items():
        assert re.search(rf"\b{name} {re.escape(pct(recall, 1))}", shipped), name
    summary = c["training"]["summary"]
    for session in summary.get("sessions", summary.get("segments", [])):  # "segments" in v2
        assert session["started_utc"] in shipped, session


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: p.name)
def test_each_versions_model_card_is_generated_from_its_json_card(version):
    """README.md beside the weights is what ``training.model_card`` makes of model_card.json
    now (regenerate with ``python -m training.model_card models/cifar10-resnet50/N``), and its
    YAML front matter reports the JSON card's accuracy."""
    import yaml

    from training.model_card import render_model_card

    readme = (version / "README.md").read_text()
    assert readme == render_model_card(card(version), version), "stale: regenerate it"
    _, meta, body = readme.split("---\n", 2)
    meta = yaml.safe_load(meta)
    assert meta["datasets"] == ["cifar10"] and meta["library_name"] == "keras"
    assert {"license", "tags", "metrics", "model-index"} <= set(meta)
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "cifar10" and result["dataset"]["split"] == "test"
    reported = {m["type"]: m["value"] for m in result["metrics"]}
    assert reported["accuracy"] == pytest.approx(card(version)["metrics"]["test_accuracy"] * 100)
    calibration = card(version).get("calibration") or {}
    if "test" in calibration:
        assert reported["ece"] == pytest.approx(calibration["test"]["after"]["ece"] * 100, abs=0.01)
    else:
        assert set(reported) == {"accuracy"}
    for section in (
        "Intended use",
        "Training data",
        "Training procedure",
        "Evaluation",
        "Limitations",
        "How to serve it",
    ):
        assert f"\n## {section}\n" in body, section
    for link in re.findall(r"\]\(([^)#]+)\)", body):  # figures and the JSON card beside it
        assert (version / link).resolve().exists(), link


CALIBRATED = [v for v in VERSIONS if (card(v).get("calibration") or {}).get("temperature")]


@pytest.mark.parametrize("version", CALIBRATED, ids=lambda p: p.name)
def test_a_calibrated_versions_probabilities_are_probabilities_in_every_variant(version):
    """What ``benchmarks/variant_accuracy.py --write-card`` measured on the 10,000 test images
    through the server's loader: every variant's answers sum to 1 within 1e-4, its ECE is at
    most 1.5 %, and its labels are the calibration's source's (same accuracy)."""
    c = card(version)
    calibration = c["calibration"]
    assert calibration["test"]["after"]["accuracy"] == pytest.approx(c["metrics"]["test_accuracy"])
    assert calibration["test"]["after"]["ece"] < calibration["test"]["before"]["ece"]
    source = c.get("calibrated_from")
    if source:
        original = card(MODEL_DIR / str(source["version"]))
        assert c["metrics"]["test_accuracy"] == original["metrics"]["test_accuracy"]
    measured = c["served_variants"]["variants"]
    assert ("openvino", "int8") in {(v["runtime"], v["precision"]) for v in measured} or not (
        version / "openvino-int8"
    ).is_dir()
    for variant in measured:
        name = f"{variant['runtime']} {variant['precision']}"
        assert variant["max_sum_error"] <= 1e-4, name
        assert variant["ece"] <= 0.015, name
        if variant["precision"] == "f32":  # OpenVINO f32 answers as TF f32 does
            assert variant["max_abs_probability_difference"] <= 0.01, name
    # bf16 and int8 are not held to 0.01 on every answer: measured, they are not (version 4:
    # 99.2 % and 90.4 % of answers within 0.01 of TF f32), and the readable card says so
    apart = [v for v in measured if v.get("answers_within_0.01_of_tensorflow_f32", 1) < 1]
    readme = (version / "README.md").read_text()
    for variant in apart:
        name = f"{variant['runtime']} {variant['precision']} differs by more on"
        assert name in readme, name
