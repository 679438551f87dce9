"""Choosing the served variant on the run's validation split, so the test set is measured once.

A variant is an internal size and the test-time averages the graph makes: with the mirror image
(flip), and optionally with copies moved a few pixels (translate, six passes in all). Every
candidate is evaluated on the run's validation split; the most accurate wins, except that a
cheaper one (compute is proportional to size squared times the passes) within ``tolerance_pt``
percentage points of it wins instead. The rule is fixed before any number is seen, and the
choice with every candidate's accuracy goes into the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.config import ConfigError
from training.data import DataError
from training.evaluate import classification_report, evaluation_split, keras_predictor, predict
from training.run import DATA_INFO, load_run_classifier, read_json, read_run_config

DEFAULT_TOLERANCE_PT = 0.2


@dataclass(frozen=True)
class Variant:
    internal_size: int
    tta_flip: bool
    tta_translate: int = 0

    @property
    def name(self) -> str:
        translate = f"_shift{self.tta_translate}" if self.tta_translate else ""
        return f"val_{self.internal_size}" + ("_tta" if self.tta_flip else "") + translate

    @property
    def passes(self) -> int:
        """Passes of the network per image: 1, 2 with the flip, 6 with flip and translate."""
        return (2 if self.tta_flip else 1) * (3 if self.tta_translate else 1)

    @property
    def cost(self) -> int:
        """Relative compute per image: pixels at the internal size times the passes."""
        return self.internal_size**2 * self.passes


@dataclass(frozen=True)
class Selection:
    chosen: Variant
    accuracy: dict[Variant, float]
    tolerance_pt: float
    images: int

    def card(self) -> dict:
        """The model card's ``validation_selection``."""
        return {
            "chosen": self.chosen.name,
            "internal_size": self.chosen.internal_size,
            "tta_flip": self.chosen.tta_flip,
            "tta_translate": self.chosen.tta_translate,
            "accuracy": {v.name: a for v, a in self.accuracy.items()},
            "images": self.images,
            "tolerance_pt": self.tolerance_pt,
            "rule": "highest validation accuracy; a cheaper variant (size^2 x passes of the "
            "network) within tolerance_pt points of it wins instead; the test set is measured "
            "once, on the chosen variant only",
        }


def choose(accuracy: dict[Variant, float], tolerance_pt: float) -> Variant:
    """The cheapest variant within ``tolerance_pt`` points of the best (the more accurate on a
    cost tie)."""
    if not accuracy:
        raise ConfigError("no variant to choose from")
    best = max(accuracy.values())
    close = [v for v, a in accuracy.items() if (best - a) * 100 <= tolerance_pt + 1e-9]
    return min(close, key=lambda v: (v.cost, -accuracy[v]))


def candidates(sizes: list[int], translate: int = 0) -> list[Variant]:
    """Each size without and with the flip, and with flip and ``translate`` when it is set."""
    if not sizes or any(s < 32 for s in sizes):
        raise ConfigError("candidate internal sizes must be at least 32 px")
    if translate < 0:
        raise ConfigError("the test-time translation cannot be negative")
    averages = [(False, 0), (True, 0)] + ([(True, translate)] if translate else [])
    return [Variant(s, *a) for s in dict.fromkeys(sizes) for a in averages]


def select_on_validation(
    run_dir: Path,
    data_source: str,
    sizes: list[int],
    tolerance_pt: float = DEFAULT_TOLERANCE_PT,
    translate: int = 0,
) -> Selection:
    """Evaluate every candidate of ``sizes`` (and ``translate``) on the run's validation split
    and choose one."""
    if tolerance_pt < 0:
        raise ConfigError("the selection tolerance cannot be negative")
    variants = candidates(sizes, translate)
    cfg = read_run_config(run_dir)
    val = evaluation_split(data_source, "val", cfg)
    if val.sha256 != read_json(run_dir, DATA_INFO)["sha256"]:
        raise DataError(f"{val.source}: checksum differs from the training data's")
    if not len(val.split):
        raise ConfigError(f"{run_dir}: the run has no validation split (val_fraction 0)")
    from training.model import wrap_for_input

    classifier, _ = load_run_classifier(run_dir)  # built once, wrapped per variant
    accuracy = {}
    for variant in variants:
        model = wrap_for_input(
            classifier, variant.internal_size, variant.tta_flip, variant.tta_translate
        )
        probs = predict(keras_predictor(model), val.split.x)
        accuracy[variant] = classification_report(val.split.y, probs, val.class_names)["accuracy"]
    return Selection(choose(accuracy, tolerance_pt), accuracy, tolerance_pt, len(val.split))
