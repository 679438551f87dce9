"""Post-training int8 quantization of an exported version, for the OpenVINO runtime.

``quantize_version`` reads the version's SavedModel with OpenVINO, quantizes it with NNCF on a
few hundred images of the training split (never validation or test images), optionally with
accuracy control (``max_drop_pt``: NNCF's ``quantize_with_accuracy_control`` measures the
validation split and reverts the layers that cost the most to float until the int8 model is
within that many points of the float32 one), stores the int8 IR
beside the SavedModel in ``VERSION/openvino-int8/`` and records in the model card what it
measured on the full official test set: the int8 accuracy, the SavedModel's own (TensorFlow,
float32) accuracy, the drop in points and the top-1 agreement between the two. The server's
``auto`` precision serves int8 only where that drop is within its rule.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError
from training.contract import CARD_NAME, INPUT_NAME, INT8_DIR
from training.data import DataError, Split, load_cifar10, split_validation
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


def version_splits(data: str, card: dict) -> tuple[Split, Split]:
    """The training and validation splits the version was trained with (same fraction and
    seed as its training run), from data whose checksum must be the training data's."""
    cifar = load_cifar10(data)
    if card.get("data", {}).get("sha256") not in (None, cifar.sha256):
        raise DataError(f"{cifar.source}: checksum differs from the model's training data")
    cfg = card.get("training", {}).get("config", {})
    return split_validation(cifar.train, cfg.get("val_fraction", 0.1), cfg.get("seed", 0))


def calibration_images(train: Split, count: int, seed: int) -> np.ndarray:
    """``count`` images of the training split, drawn with ``seed``."""
    pick = np.random.default_rng(seed).choice(
        len(train), size=min(count, len(train)), replace=False
    )
    return train.x[np.sort(pick)]


def unique_node_names(model) -> int:
    """Give every operation of an ``ov.Model`` its own name; returns how many were renamed.

    NNCF's accuracy control looks layers up by name when it reverts them to float, and stops
    when one name matches two nodes ("More than one node in NNCFGraph matches name
    probs/bias", reported on version 2, whose flip average calls the network twice). Not
    reproduced since: version 2's operations have unique names both as ``Core.read_model``
    (1,084 of 1,084) and as ``ov.convert_model`` (638 of 638) read it. This guards any model
    anyway: repeats get ``/copy1``, ``/copy2``...
    """
    seen: Counter[str] = Counter(op.get_friendly_name() for op in model.get_ordered_ops())
    counts: Counter[str] = Counter()
    renamed = 0
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        counts[name] += 1
        if seen[name] > 1 and counts[name] > 1:
            op.set_friendly_name(f"{name}/copy{counts[name] - 1}")
            renamed += 1
    return renamed


def head_and_after(model) -> list[str]:
    """Names of the classifier's last layer (its matrix product) and of every operation after
    it: the bias, the softmax, the test-time average and the temperature.

    They are NNCF's ignored scope, so they stay in float: quantizing them (version 3's int8 copy)
    put the probabilities on a coarse grid, off by up to 0.11 from the float model's, and their
    sums by up to 0.05; they cost a few operations on ten numbers per copy, nothing next to the
    convolutions. The classifier's last layer is the model's one matrix product (ResNet50's
    convolutions are ``Convolution`` operations); a model with another is refused rather than
    given a scope that might not be the head's."""
    heads = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    if len(heads) != 1:
        raise ConfigError(
            f"expected one matrix product (the classifier's last layer), found {len(heads)}"
        )
    seen: dict[str, None] = {}
    stack = list(heads)
    while stack:
        op = stack.pop()
        name = op.get_friendly_name()
        if name in seen or op.get_type_name() == "Result":
            continue
        seen[name] = None
        for output in op.outputs():
            stack += [target.get_node() for target in output.get_target_inputs()]
    return list(seen)


def float_head_scope(model):
    """``head_and_after`` as NNCF's ignored scope."""
    import nncf

    return nncf.IgnoredScope(names=head_and_after(model), validate=False)


def float_layers(model) -> list[str]:
    """Convolutions and matrix products of a quantized ``ov.Model`` whose weights are not
    quantized: the layers kept in float.

    A quantized layer's weights reach it through a ``FakeQuantize`` (in memory, as NNCF
    returns the model) or as int8 constants converted and scaled back (as the IR stores them);
    a layer kept in float reads a float constant (or one stored in float16 and converted).
    """
    kept = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            if not _quantized_weights(op.input_value(1).get_node()):
                kept.append(op.get_friendly_name())
    return kept


def _quantized_weights(node) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
    # Convert, Subtract, Multiply: the decompression of stored int8 weights, or a float16 constant
    return any(_quantized_weights(value.get_node()) for value in node.input_values())


def validation_items(split: Split) -> list[tuple[np.ndarray, int]]:
    """The validation split as NNCF's accuracy control wants it: one data item per image."""
    return [(split.x[i], int(split.y[i])) for i in range(len(split))]


def per_item_accuracy(compiled, items, batch: int = 100) -> tuple[float, list[float]]:
    """The validation function for NNCF's accuracy control: the accuracy and one value per data
    item (1.0 right, 0.0 wrong), computed ``batch`` images at a time.

    NNCF ranks the quantizers on the items whose values differ most between the float and the
    int8 model, by their indices in the dataset; so the values must be one per item, and the
    items single images (batches of 100 as items, with a value per image, stopped version 3's
    ranking with ``IndexError: list index out of range``).
    """
    correct: list[float] = []
    items = list(items)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images = np.stack([image for image, _ in chunk])
        labels = np.array([label for _, label in chunk])
        probs = compiled({INPUT_NAME: images})[compiled.outputs[0]]
        correct += (probs.argmax(1) == labels).astype(float).tolist()
    return float(np.mean(correct)), correct


def _accuracy_controlled(model, calibration, validation: Split, max_drop_pt: float):
    """NNCF's accuracy control on the validation split; returns the model and what it did."""
    import nncf
    import openvino as ov

    items = validation_items(validation)
    unique_node_names(model)
    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(list(calibration[:, None]), lambda x: {INPUT_NAME: x}),
        nncf.Dataset(items),
        per_item_accuracy,
        max_drop=max_drop_pt / 100,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        ignored_scope=float_head_scope(model),
    )
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    float_acc, _ = per_item_accuracy(core.compile_model(model, "CPU", f32), items)
    int8_acc, _ = per_item_accuracy(core.compile_model(quantized, "CPU", f32), items)
    return quantized, {
        "max_drop_pt": max_drop_pt,
        "validation_images": len(validation),
        "validation_accuracy_float32": float_acc,
        "validation_accuracy_int8": int8_acc,
        "kept_in_float": float_layers(quantized),
    }


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
    version_dir: Path,
    data: str,
    images: int = 300,
    seed: int = 0,
    overwrite: bool = False,
    max_drop_pt: float | None = None,
) -> QuantizeResult:
    """Quantize ``version_dir`` on ``images`` training images; with ``max_drop_pt``, under
    NNCF's accuracy control on the version's validation split."""
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
    train, validation = version_splits(data, card)
    calibration = calibration_images(train, images, seed)

    model = ov.Core().read_model(version_dir)
    control = None
    if max_drop_pt is None:
        dataset = nncf.Dataset(list(calibration[:, None]), lambda x: {INPUT_NAME: x})
        quantized = nncf.quantize(
            model, dataset, subset_size=len(calibration), ignored_scope=float_head_scope(model)
        )
    else:
        if not len(validation):
            raise ConfigError("accuracy control needs the version's validation split")
        quantized, control = _accuracy_controlled(model, calibration, validation, max_drop_pt)

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
        "method": (
            "NNCF post-training quantization (nncf.quantize, default preset) of the "
            "SavedModel as OpenVINO reads it"
            if control is None
            else "NNCF post-training quantization with accuracy control "
            "(nncf.quantize_with_accuracy_control, default preset) of the SavedModel as "
            "OpenVINO reads it: layers that cost the most are reverted to float until the "
            "validation split loses at most max_drop_pt points"
        ),
        **({"accuracy_control": control} if control else {}),
        "float_head": "the classifier's last layer and every operation after it (softmax, "
        "test-time average, temperature) are NNCF's ignored scope and stay in float: "
        f"{len(head_and_after(model))} operations",
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
        "max_abs_probability_difference": float(np.abs(int8_probs - reference_probs).max()),
        "max_sum_error": float(np.abs(int8_probs.astype(np.float64).sum(1) - 1).max()),
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
