"""The model card a model user reads: ``VERSION/README.md``, made from ``model_card.json``.

The JSON card is the record (the server reads it, the tools write measurements into it); this
module renders it in the format model users know from Hugging Face: YAML front matter
(``license``, ``library_name``, ``tags``, ``datasets``, ``metrics``, ``model-index``) and
sections for intended use, serving, training data and procedure, evaluation and limitations.
Every number comes from the JSON card, so the two cannot disagree: ``export`` writes the
README, and ``quantize`` and the benchmarks' ``--write-card`` rewrite it after each new
measurement. No TensorFlow is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from training.calibration import RELIABILITY_FIGURE
from training.contract import CARD_NAME

README_NAME = "README.md"
INT8_MAX_DROP_PT = 0.3  # the server's rule for auto (app/runtimes, INT8_MAX_ACCURACY_DROP_PT)
LICENSE = "apache-2.0"  # the repository's LICENSE, which covers the weights it trains
UPLOAD_FORMS = {
    "png": "PNG (the clean test set)",
    "jpeg_q75": "JPEG quality 75",
    "jpeg_q50": "JPEG quality 50",
    "webp_q80": "WebP quality 80",
    "grayscale_png": "grayscale PNG",
    "exif_rotated_jpeg": "phone-style JPEG (EXIF orientation 6, quality 90)",
    "upscaled_8x_png": "PNG upscaled 8x (bicubic, 256x256)",
    "rgba_png": "RGBA PNG",
}


def _pct(x: float, digits: int = 2) -> str:
    return f"{x * 100:.{digits}f} %"


def _relative(drop_pt: float) -> str:
    """``0.15 points below``, ``0.04 points above`` (a negative drop), ``level with``."""
    if round(drop_pt, 2) == 0:
        return "level with"
    return f"{abs(drop_pt):.2f} points {'below' if drop_pt > 0 else 'above'}"


def _sessions(card: dict) -> list[dict]:
    summary = card.get("training", {}).get("summary", {})
    return summary.get("sessions", summary.get("segments", []))  # "segments" before v3


def front_matter(card: dict) -> dict:
    """The YAML metadata: what model hubs index and what ``model-index`` reports."""
    metrics = card.get("metrics") or {}
    calibration = card.get("calibration") or {}
    results = []
    if "test_accuracy" in metrics:
        results.append(
            {
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": "CIFAR-10", "type": "cifar10", "split": "test"},
                "metrics": [
                    {
                        "type": "accuracy",
                        "value": round(metrics["test_accuracy"] * 100, 2),
                        "name": "Official test accuracy, as served (%)",
                    }
                ]
                + (
                    [
                        {
                            "type": "ece",
                            "value": round(calibration["test"]["after"]["ece"] * 100, 2),
                            "name": "Expected calibration error, official test, "
                            f"{calibration['bins']} bins (%)",
                        }
                    ]
                    if "test" in calibration
                    else []
                ),
            }
        )
    return {
        "license": card.get("license", LICENSE),
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "resnet50", "cifar10", "tensorflow-savedmodel"]
        + (["openvino", "int8"] if "int8" in card else []),
        "datasets": ["cifar10"],
        "metrics": ["accuracy"],
        "model-index": [{"name": f"{card['name']} version {card['version']}", "results": results}],
    }


def _summary(card: dict) -> list[str]:
    metrics = card.get("metrics") or {}
    accuracy = (
        f"**{_pct(metrics['test_accuracy'])}** on the official CIFAR-10 test set (10,000 images) "
        "as served"
        if "test_accuracy" in metrics
        else "not measured on the test set at export"
    )
    return [
        f"# {card['name']}, version {card['version']}",
        "",
        "A ResNet50 image classifier for the 10 CIFAR-10 classes "
        f"({', '.join(card['class_names'])}). Official test accuracy: {accuracy}. "
        f"Backbone: {card['backbone']}; weights: {card['weights_source']}. "
        "The SavedModel takes uint8 RGB images `[batch, 32, 32, 3]` and returns float32 "
        "probabilities `[batch, 10]`; everything else happens inside the graph: "
        + "; ".join(card["preprocessing_in_graph"])
        + ".",
        "",
        "This file is generated from [`model_card.json`](model_card.json) (`python -m "
        "training.model_card VERSION_DIR`); the JSON card holds every measurement in full.",
    ]


def _intended_use(card: dict) -> list[str]:
    return [
        "## Intended use",
        "",
        "Classifying small photographs of the ten CIFAR-10 classes, served over HTTP by this "
        "repository's server (`/predict`, Open Inference Protocol v2, TensorFlow Serving "
        "REST), or by any server that reads a TensorFlow SavedModel. It is a reference model "
        "for a model server: for demonstrations, tests, benchmarks and as a starting point "
        "for retraining.",
        "",
        "Out of scope: images of anything outside the ten classes (the model always answers "
        'one of them, with no "unknown"), decisions about people, and any use where an error '
        "rate of several percent matters.",
    ]


def _serving(card: dict) -> list[str]:
    version = card["version"]
    lines = [
        "## How to serve it",
        "",
        "```sh",
        f"CIFAR10_MODEL_DIR=models/{card['name']} CIFAR10_MODEL_VERSION={version} make serve",
        "curl -F file=@samples/ship.png http://localhost:8000/predict",
        "```",
        "",
        f"Signature `{card['signature']['name']}`: input `{card['signature']['input']['name']}` "
        f"uint8 `[-1, 32, 32, 3]`, output `{card['signature']['output']['name']}` float32 "
        "`[-1, 10]` in the order of `class_names`. The folder is the layout TensorFlow Serving "
        "and KServe read.",
    ]
    if "int8" in card:
        drop = card["int8"]["accuracy_drop_pt"]
        verdict = "serves this one" if drop <= INT8_MAX_DROP_PT else "passes this one over"
        lines += [
            "",
            f"`{card['int8']['path']}` is an int8 OpenVINO copy "
            f"({_pct(card['int8']['test_accuracy'])} official test, {_relative(drop)} the "
            "SavedModel). The server's `CIFAR10_PRECISION=auto` serves an int8 copy that loses at "
            f"most {INT8_MAX_DROP_PT} points, so it {verdict}; `CIFAR10_PRECISION=int8` serves it "
            "anyway.",
        ]
    return lines


def _training(card: dict) -> list[str]:
    data = card.get("data", {})
    training = card.get("training", {})
    summary = training.get("summary", {})
    if "train_images" in data:
        split = (
            f"the official training batches: {data['train_images']:,} images to train on and "
            f"{data['val_images']:,} held out for validation (a fixed, seeded split; the variant "
            "to serve is chosen on it), and the official test batch (10,000 images) measured "
            f"once, at the end. Data sha256 `{data.get('sha256', '?')}`."
        )
    else:
        split = f"source: {data.get('source', 'not recorded')}."
    lines = [
        "## Training data",
        "",
        f"CIFAR-10 (Krizhevsky, 2009), {split}",
        "",
        "## Training procedure",
        "",
    ]
    if "recipe" in card:
        lines += [card["recipe"], ""]
    if "config_file" in card:
        lines += [f"Configuration: [`{card['config_file']}`](../../../{card['config_file']}).", ""]
    if "not_used" in card:
        lines += [f"Not used: {card['not_used']}", ""]
    if summary:
        hours = summary.get("wall_time_s", 0) / 3600
        lines += [
            f"{summary.get('epochs_completed')} epochs, {hours:.2f} h of recorded training "
            f"time on Keras' {summary.get('backend', '?')} backend; best validation accuracy "
            f"{_pct(summary['best_val_accuracy'])} at epoch {summary.get('best_epoch')}."
            if summary.get("best_val_accuracy") is not None
            else f"{summary.get('epochs_completed')} epochs, {hours:.2f} h.",
            "",
        ]
        median = summary.get("median_epoch_s")
        if median and summary.get("epochs_completed"):
            epochs = summary["epochs_completed"]
            lines += [
                f"The median epoch took {median:.0f} s, so the same configuration takes about "
                f"{epochs * median / 3600:.1f} h ({epochs} x {median:.0f} s) on the machine "
                "below when nothing runs beside it (an estimate; the recorded time counts "
                "every epoch as it ran).",
                "",
            ]
    sessions = _sessions(card)
    if sessions:
        lines += [
            "Where the time went (one row per start or resume of the process):",
            "",
            "| started (UTC) | epochs | seconds | machine |",
            "| --- | --- | ---: | --- |",
        ]
        for s in sessions:
            hw = s.get("hardware", {})
            lines.append(
                f"| {s['started_utc']} | {s['first_epoch']}-{s['last_epoch']} | "
                f"{s['seconds']:.0f} | {hw.get('cpu', '?')} family/model "
                f"{hw.get('family_model', '?')}, {hw.get('cores', '?')} cores, "
                f"{' '.join(hw.get('isa', []))} |"
            )
        lines.append("")
    reproduce = card.get("reproduce")
    if isinstance(reproduce, dict):
        lines += ["How it was made:", "", "```sh", *reproduce.values(), "```", ""]
    return lines[:-1] if lines[-1] == "" else lines


def _evaluation(card: dict) -> list[str]:
    metrics = card.get("metrics") or {}
    if "test" not in metrics:
        return ["## Evaluation", "", "Not measured on the test set at export."]
    per_class = metrics["test"]["per_class"]
    lines = [
        "## Evaluation",
        "",
        f"Official test set, 10,000 images, as served: **{_pct(metrics['test_accuracy'])}**"
        + (
            f" ({_pct(metrics['test_plain_accuracy'])} without the test-time "
            + ("averages)." if card.get("tta_translate") else "flip).")
            if "test_plain_accuracy" in metrics
            else "."
        ),
        "",
        "| class | precision | recall |",
        "| --- | ---: | ---: |",
        *(
            f"| {name} | {_pct(v['precision'], 1)} | {_pct(v['recall'], 1)} |"
            for name, v in per_class.items()
        ),
    ]
    selection = card.get("validation_selection")
    if selection:
        candidates = ", ".join(f"{k} {_pct(v)}" for k, v in selection["accuracy"].items())
        rule = selection["rule"].replace("tolerance_pt", str(selection["tolerance_pt"]))
        lines += [
            "",
            f"The served variant was chosen on the validation split before the test set was "
            f"measured: {candidates}; chosen `{selection['chosen']}` ({rule}).",
        ]
    served = card.get("served_variants")
    if served:
        lines += [
            "",
            "Every runtime and precision the server offers, on the same test images through "
            f"the server's own loading code (`{served['command']}`):",
            "",
            "| runtime | precision | official test accuracy | validation accuracy "
            "| top-1 agreement with TF f32 |",
            "| --- | --- | ---: | ---: | ---: |",
            *(
                f"| {v['runtime']} | {v['precision']} | {_pct(v['test_accuracy'])} | "
                f"{_pct(v['validation_accuracy']) if 'validation_accuracy' in v else '-'} | "
                f"{_pct(v['top1_agreement_with_tensorflow_f32'])} |"
                for v in served["variants"]
            ),
        ]
    forms = card.get("upload_forms")
    if forms:
        lines += [
            "",
            "As users upload images: the test set re-encoded in each form, decoded by the "
            f"server's own image code and classified by {forms['runtime']} {forms['precision']} "
            f"(`{forms['command']}`):",
            "",
            "| upload form | accuracy | drop, points |",
            "| --- | ---: | ---: |",
            *(
                f"| {UPLOAD_FORMS.get(name, name)} | {_pct(f['accuracy'])} | "
                f"{f['drop_points']:.2f} |"
                for name, f in forms["forms"].items()
            ),
        ]
    if "int8" in card:
        int8 = card["int8"]
        lines += [
            "",
            f"int8 copy: {int8['method']}, calibrated on {int8['calibration']['images']} images "
            f"({int8['calibration']['source']}): {_pct(int8['test_accuracy'])}, "
            f"{_relative(int8['accuracy_drop_pt'])} {_pct(int8['reference_test_accuracy'])}"
            f", top-1 agreement {_pct(int8['top1_agreement_with_reference'])}.",
        ]
        control = int8.get("accuracy_control")
        if control:
            kept = control["kept_in_float"]
            lines[-1] += (
                f" On the {control['validation_images']:,} validation images: "
                f"{_pct(control['validation_accuracy_int8'])} against float32's "
                f"{_pct(control['validation_accuracy_float32'])} (bound {control['max_drop_pt']}"
                f" points; {len(kept) or 'no'} layer{'' if len(kept) == 1 else 's'} kept in float)."
            )
        if "max_sum_error" in int8:
            lines[-1] += (
                f" {int8['float_head'][0].upper()}{int8['float_head'][1:]}; on the test set the "
                f"int8 probabilities sum to 1 within {int8['max_sum_error']:.1e} and differ from "
                f"the reference's by at most {int8['max_abs_probability_difference']:.4f}."
            )
        replaced = int8.get("replaced")
        if replaced:
            lines[-1] += (
                f" It replaced {replaced['what']}: {_pct(replaced['test_accuracy'])} official "
                f"test, {_pct(replaced['validation_accuracy'])} validation ({replaced['why']})."
            )
    return lines


def _within(variant: dict) -> str:
    share = variant.get("answers_within_0.01_of_tensorflow_f32")
    return "-" if share is None else _pct(share)


def _calibration(card: dict) -> list[str]:
    """What ``probability`` means: the calibration, its measures, every variant's."""
    section = card.get("calibration") or {}
    lines = ["## Probabilities", ""]
    if section.get("temperature") is None:
        return lines + [
            "Not calibrated: the probabilities are the network's softmax as the test-time "
            "averages combine it; they need not match how often the model is right "
            "(`cifar10-model calibrate --model VERSION_DIR` writes a calibrated version)."
        ]
    bins = section["bins"]
    lines += [
        f"Calibrated: {section['method']}. Temperature **{section['temperature']:.4f}**. "
        f"Expected calibration error (ECE: top-1 confidence in {bins} equal-width bins) and "
        "negative log-likelihood of the true class (NLL), before and after, in Keras float32:",
        "",
        "| split | images | accuracy | mean top-1 probability, before / after "
        "| ECE, before / after | NLL, before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split in ("validation", "test"):
        if split in section:
            b, a = section[split]["before"], section[split]["after"]
            lines.append(
                f"| {'official test' if split == 'test' else split} | {b['images']:,} | "
                f"{_pct(a['accuracy'])} | {b['mean_confidence']:.3f} / "
                f"{a['mean_confidence']:.3f} | {_pct(b['ece'])} / **{_pct(a['ece'])}** | "
                f"{b['nll']:.3f} / {a['nll']:.3f} |"
            )
    source = card.get("calibrated_from")
    if source:
        lines += [
            "",
            f"Calibrated from {source['name']} version {source['version']}: {source['note']}.",
        ]
    variants = [v for v in (card.get("served_variants") or {}).get("variants", []) if "ece" in v]
    before = {(v["runtime"], v["precision"]): v for v in section.get("source_variants", [])}
    if variants and before:
        lines += [
            "",
            f"Every served variant before (version {source['version']}, uncalibrated) and after, "
            "official test set and validation split, through the server's own loading code:",
            "",
            "| runtime | precision | test ECE, before / after | test NLL, before / after "
            "| validation ECE, before / after | largest distance of a sum from 1, before / after |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *(
                f"| {v['runtime']} | {v['precision']} | {_pct(b['ece'])} / **{_pct(v['ece'])}** "
                f"| {b['nll']:.3f} / {v['nll']:.3f} | {_pct(b['validation_ece'])} / "
                f"{_pct(v['validation_ece'])} | {b['max_sum_error']:.1e} / "
                f"{v['max_sum_error']:.1e} |"
                for v in variants
                if (b := before.get((v["runtime"], v["precision"])))
            ),
        ]
    apart = [v for v in variants if v.get("answers_within_0.01_of_tensorflow_f32", 1) < 1]
    if apart:
        lines += [
            "",
            "Not every answer is within 0.01 of TensorFlow f32's: "
            + "; ".join(
                f"{v['runtime']} {v['precision']} differs by more on "
                f"{_pct(1 - v['answers_within_0.01_of_tensorflow_f32'])} of the test images "
                f"(at most {v['max_abs_probability_difference']:.3f})"
                for v in apart
            )
            + ". The temperature sharpens the answers, and with them what a lower precision "
            "changes.",
        ]
    if variants:
        lines += [
            "",
            "Every served variant, official test set, through the server's own loading code "
            "(the probabilities of each answer sum to 1 within the last column):",
            "",
            "| runtime | precision | ECE | NLL | answers within 0.01 of TF f32 "
            "| largest difference from TF f32 | largest distance of a sum from 1 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            *(
                f"| {v['runtime']} | {v['precision']} | {_pct(v['ece'])} | {v['nll']:.3f} | "
                f"{_within(v)} | {v['max_abs_probability_difference']:.4f} | "
                f"{v['max_sum_error']:.1e} |"
                for v in variants
            ),
        ]
    return lines


def _limitations(card: dict) -> list[str]:
    lines = [
        "## Limitations",
        "",
        "- Trained on 32x32 images: every upload is resized to 32x32 first, so fine detail in a "
        "large photo is lost, and photos unlike CIFAR-10's (close-ups, drawings, several "
        "objects) are outside what it learned.",
    ]
    metrics = card.get("metrics") or {}
    recalls = metrics.get("test_per_class_accuracy")
    if recalls:
        weakest = sorted(recalls.items(), key=lambda kv: kv[1])[:2]
        confusion = metrics.get("test", {}).get("confusion_matrix")
        detail = ""
        if confusion:
            names = card["class_names"]
            row = confusion[names.index(weakest[0][0])]
            worst = max(
                (n for n in range(len(names)) if names[n] != weakest[0][0]), key=lambda n: row[n]
            )
            detail = (
                f"; {row[worst]} of the {sum(row)} test {weakest[0][0]}s are called {names[worst]}"
            )
        lines.append(
            "- Weakest classes: "
            + ", ".join(f"{name} ({_pct(r, 1)} recall)" for name, r in weakest)
            + detail
            + "."
        )
    forms = (card.get("upload_forms") or {}).get("forms", {})
    costly = [(n, f["drop_points"]) for n, f in forms.items() if f["drop_points"] > 2.0]
    if costly:
        lines.append(
            "- Uploads that cost more than 2 points: "
            + ", ".join(f"{UPLOAD_FORMS.get(n, n)} ({d:.2f})" for n, d in costly)
            + "."
        )
    if "random initialization" in card.get("weights_source", ""):
        lines.append(
            "- No pretrained weights: trained from random initialization on CIFAR-10 alone "
            "(not transfer learning)."
        )
    return lines


def _files(version_dir: Path | None) -> list[str]:
    lines = ["## Files", "", "- `saved_model.pb`, `variables/`: the TensorFlow SavedModel"]
    if version_dir is None or (version_dir / "openvino-int8").is_dir():
        lines.append("- `openvino-int8/`: the int8 OpenVINO copy")
    lines.append("- `model_card.json`: the full record, served by `GET /model`")
    for figure, what in (
        ("learning_curves.png", "learning curves"),
        ("confusion_matrix_test.png", "confusion matrix on the official test set"),
        (RELIABILITY_FIGURE, "reliability diagram on the official test set, before and after"),
    ):
        if version_dir is None or (version_dir / figure).is_file():
            lines += [f"- `{figure}`: {what}", "", f"![{what}]({figure})", ""]
    return lines[:-1] if lines[-1] == "" else lines


def render_model_card(card: dict, version_dir: Path | None = None) -> str:
    """The README.md text for ``card`` (figures and files listed if ``version_dir`` has them)."""
    meta = yaml.safe_dump(front_matter(card), sort_keys=False, allow_unicode=True)
    sections = [
        _summary(card),
        _intended_use(card),
        _serving(card),
        _training(card),
        _evaluation(card),
        _calibration(card),
        _limitations(card),
        _files(version_dir),
        [
            "## License and citation",
            "",
            f"`{card.get('license', LICENSE)}`, as the repository that trained it "
            "([LICENSE](../../../LICENSE)). Training data: Alex Krizhevsky, *Learning Multiple "
            "Layers of Features from Tiny Images*, technical report, 2009.",
        ],
    ]
    body = "\n\n".join("\n".join(section) for section in sections)
    return f"---\n{meta}---\n\n{body}\n"


def write_model_card(version_dir: Path) -> Path:
    """Write ``version_dir/README.md`` from its ``model_card.json``; return its path."""
    version_dir = Path(version_dir)
    card = json.loads((version_dir / CARD_NAME).read_text())
    path = version_dir / README_NAME
    path.write_text(render_model_card(card, version_dir))
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m training.model_card",
        description="Write VERSION/README.md (the model card) from VERSION/model_card.json.",
    )
    parser.add_argument("versions", nargs="+", type=Path, help="exported version folders")
    for version_dir in parser.parse_args(argv).versions:
        print(write_model_card(version_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
