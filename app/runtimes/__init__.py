"""Inference runtimes: one file per runtime, one interface (``base.Runtime``) for all.

``select`` resolves the configured runtime and precision (``auto`` included) for one model
version and loads it. The batcher, the routes and the metrics only see ``Runtime``.
"""

from __future__ import annotations

from pathlib import Path

from app.cpu import has_fast_bf16
from app.runtimes.base import (
    INT8_DIR,
    PRECISIONS,
    RUNTIMES,
    Runtime,
    RuntimeConfigError,
    RuntimeLoadError,
)

__all__ = [
    "INT8_DIR",
    "PRECISIONS",
    "RUNTIMES",
    "Runtime",
    "RuntimeConfigError",
    "RuntimeLoadError",
    "resolve",
    "select",
]

# auto picks int8 only where the card records that it passed this rule.
INT8_MAX_ACCURACY_DROP_PT = 0.3


def openvino_installed() -> bool:
    """Whether ``import openvino`` works here (an absent or broken install both say no)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def int8_accepted(card: dict) -> bool:
    """The card's int8 record: measured on the full test set, within the accuracy rule."""
    int8 = card.get("int8") or {}
    drop = int8.get("accuracy_drop_pt")
    return isinstance(drop, int | float) and drop <= INT8_MAX_ACCURACY_DROP_PT


def resolve(runtime: str, precision: str, version_dir: Path, card: dict) -> tuple[str, str]:
    """``(runtime, precision)`` to serve ``version_dir`` with, ``auto`` resolved; a
    ``RuntimeConfigError`` names what cannot be served here."""
    if runtime not in ("auto", *RUNTIMES):
        raise RuntimeConfigError(f"unknown runtime {runtime!r}; use auto, {', '.join(RUNTIMES)}")
    if precision not in ("auto", *PRECISIONS):
        raise RuntimeConfigError(
            f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}"
        )
    if runtime == "auto":
        runtime = "openvino" if openvino_installed() else "tensorflow"
    elif runtime == "openvino" and not openvino_installed():
        raise RuntimeConfigError(
            "runtime 'openvino' asked for, but the openvino package is not installed "
            "(pip install openvino)"
        )
    has_int8 = (version_dir / INT8_DIR / "model.xml").is_file()
    if runtime == "tensorflow":
        if precision not in ("auto", "f32"):
            raise RuntimeConfigError(
                f"precision {precision!r} needs the openvino runtime; tensorflow serves f32"
            )
        return runtime, "f32"
    if precision == "auto":
        if has_int8 and int8_accepted(card):
            return runtime, "int8"
        return runtime, "bf16" if has_fast_bf16() else "f32"
    if precision == "int8" and not has_int8:
        raise RuntimeConfigError(
            f"{version_dir}: precision 'int8' asked for, but this version has no "
            f"{INT8_DIR}/model.xml (make it with: cifar10-model quantize --model {version_dir})"
        )
    if precision == "bf16" and not has_fast_bf16():
        raise RuntimeConfigError(
            "precision 'bf16' asked for, but this CPU has neither AVX512_BF16 nor AMX"
        )
    return runtime, precision


def select(
    runtime: str, precision: str, version_dir: Path, card: dict, streams: int = 1
) -> Runtime:
    """Load ``version_dir`` with the resolved runtime and precision; OpenVINO computes
    ``streams`` batches at once (TensorFlow one, on every core)."""
    runtime, precision = resolve(runtime, precision, version_dir, card)
    if runtime == "openvino":
        from app.runtimes.openvino import OpenVINORuntime

        return OpenVINORuntime.load(version_dir, precision, streams)
    from app.runtimes.tensorflow import TensorFlowRuntime

    return TensorFlowRuntime.load(version_dir)
