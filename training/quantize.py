"""Post-training int8 quantization of an exported version, for the OpenVINO runtime.

``quantize_version`` reads the version's SavedModel with OpenVINO, quantizes it with NNCF on a
few hundred images of the training split (never validation or test images), stores the int8 IR
beside the SavedModel in ``VERSION/openvino-int8/`` and records in the model card what it
measured on the full official test set: the int8 accuracy, the SavedModel's own (TensorFlow,
float32) accuracy, the drop in points and the top-1 agreement between the two. The server's
``auto`` precision serves int8 only where that drop is within its rule.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError
from training.contract import CARD_NAME, INPUT_NAME, INT8_DIR
from training.data import DataError, load_cifar10, split_validation
from training.evaluate import classification_report, predict, saved_model_predictor
from training.model_card import write_model_card
from training.provenance import library_versions, utc_now


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    test_accuracy: float
    reference_accuracy: float
    accuracy_drop_pt: float
    top1_agreement: float


def calibration_images(data: str, card: dict, count: int, seed: int) -> np.ndarray:
    """``count`` training images the model was trained on: the version's validation split
    (same fraction and seed as its training run) is left out."""
    cifar = load_cifar10(data)
    if card.get("data", {}).get("sha256") not in (None, cifar.sha256):
        raise DataError(f"{cifar.source}: checksum differs from the model's training data")
    cfg = card.get("training", {}).get("config", {})
    train, _ = split_validation(cifar.train, cfg.get("val_fraction", 0.1), cfg.get("seed", 0))
    pick = np.random.default_rng(seed).choice(
        len(train), size=min(count, len(train)), replace=False
    )
    return train.x[np.sort(pick)]


def openvino_predictor(model):
    """Call an ``ov.Model`` on the CPU at float32 (for the layers that are not int8)."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    output = compiled.outputs[0]

    def run(images: np.ndarray) -> np.ndarray:
        request.infer({INPUT_NAME: np.ascontiguousarray(images)})
        return request.get_tensor(output).data.copy()

    return run


def quantize_version(
    version_dir: Path, data: str, images: int = 300, seed: int = 0, overwrite: bool = False
) -> QuantizeResult:
    import nncf
    import openvino as ov

    version_dir = Path(version_dir)
    card_path = version_dir / CARD_NAME
    if not (version_dir / "saved_model.pb").is_file() or not card_path.is_file():
        raise ConfigError(f"{version_dir}: not an exported version (saved_model.pb + card)")
    target = version_dir / INT8_DIR
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: already exists; pass --overwrite to redo it")
    card = json.loads(card_path.read_text())
    calibration = calibration_images(data, card, images, seed)

    model = ov.convert_model(version_dir)
    dataset = nncf.Dataset(list(calibration[:, None]), lambda x: {INPUT_NAME: x})
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))

    test = load_cifar10(data).test
    int8_probs = predict(openvino_predictor(quantized), test.x)
    reference_probs = predict(saved_model_predictor(version_dir), test.x)
    names = card["class_names"]
    int8 = classification_report(test.y, int8_probs, names)
    reference = classification_report(test.y, reference_probs, names)
    agreement = float((int8_probs.argmax(1) == reference_probs.argmax(1)).mean())
    drop_pt = round(100 * (reference["accuracy"] - int8["accuracy"]), 2)

    tmp = version_dir / f".{INT8_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ov.save_model(quantized, tmp / "model.xml", compress_to_fp16=False)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    card["int8"] = {
        "path": f"{INT8_DIR}/model.xml",
        "created": utc_now(),
        "method": "NNCF post-training quantization (nncf.quantize, default preset) of the "
        "SavedModel as OpenVINO reads it",
        "calibration": {
            "images": len(calibration),
            "source": "training split, the run's validation images left out",
            "seed": seed,
        },
        "test_accuracy": int8["accuracy"],
        "test_per_class_accuracy": {k: v["recall"] for k, v in int8["per_class"].items()},
        "reference": "the SavedModel through TensorFlow, float32, same test images",
        "reference_test_accuracy": reference["accuracy"],
        "accuracy_drop_pt": drop_pt,
        "top1_agreement_with_reference": agreement,
        "test_images": int8["images"],
        "libraries": {
            **{k: v for k, v in library_versions().items() if k in ("tensorflow", "numpy")},
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
        },
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_model_card(version_dir)
    return QuantizeResult(target, int8["accuracy"], reference["accuracy"], drop_pt, agreement)
