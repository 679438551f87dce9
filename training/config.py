"""The training configuration: one dataclass, filled from defaults, a JSON file, then flags.

Each field is written once, here: its default, its help text, its flag group and, where the
values are a closed set, its choices. ``cli.py`` derives the ``train`` flags from these fields
and ``validate`` checks the choices, so a new option needs no second declaration.

The resolved configuration is written beside every run's outputs (``config.json``) and into
the model card, so any result can be reproduced with ``train --config RUN/config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def parse_size_schedule(value: str | dict) -> dict[int, int]:
    """``"0:32,6:48,12:64"`` (or a dict) → ``{0: 32, 6: 48, 12: 64}`` (epoch → internal size)."""
    if isinstance(value, dict):
        items = value.items()
    else:
        items = [part.split(":", 1) for part in value.split(",") if part.strip()]
    try:
        return {int(k): int(v) for k, v in items}
    except ValueError:
        raise ConfigError(
            f"size schedule must look like '0:32,6:48,12:64', got {value!r}"
        ) from None


def option(
    default: Any,
    help: str,
    group: str,
    choices: tuple | None = None,
    parse: Callable[[str], Any] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A ``TrainConfig`` field that is also a ``train`` flag in ``group``.

    ``parse`` turns the flag's text into the value (by default the field's type does);
    ``factory`` gives a mutable default.
    """
    meta = {"help": help, "group": group, "choices": choices, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DATA_HELP = (
    "CIFAR-10: a cifar-10-batches-py directory (or its parent), the official "
    "cifar-10-python.tar.gz, or 'download' (Keras download, needs internet)"
)


@dataclass
class TrainConfig:
    """Everything that decides a training run; written beside it as ``config.json``."""

    data: str = option("download", DATA_HELP, "data")
    val_fraction: float = option(0.1, "share of the training set held out for validation", "data")
    limit_train: int | None = option(
        None, "debug: only the first N training (and validation) images", "data"
    )
    weights: str = option(
        "none", "backbone init: none (random), imagenet, or a local .h5 path", "model"
    )
    init_from: str | None = option(
        None,
        "start from these weights instead of random init, to fine-tune: an exported version "
        "directory (SavedModel), a finished run directory or a .weights.h5 file; same "
        "architecture (stem) as this run",
        "model",
    )
    teacher: str | None = option(
        None,
        "distil from this model (same forms as init_from, same architecture): its "
        "probabilities on each batch before the upload forms are applied become the targets",
        "model",
    )
    teacher_weight: float = option(
        1.0, "with a teacher: its share of the targets, the rest the labels", "model"
    )
    stem: str = option(
        "imagenet",
        "imagenet: ResNet50's 7x7 stride-2 convolution and max-pool (needed for imagenet "
        "weights); cifar: a 3x3 stride-1 convolution and one stride-2 max-pool, for 32 px; "
        "cifar-full: the same without the max-pool (32x32 maps in stage 2, about 4x the "
        "cost; the same weights as cifar)",
        "model",
        choices=("imagenet", "cifar", "cifar-full"),
    )
    internal_size: int = option(
        64, "px the 32x32 input is resized to inside the model (when served)", "model"
    )
    size_schedule: dict[int, int] = option(
        None,
        "progressive resizing, epoch (0-based):px pairs, e.g. 0:32,6:48,12:64",
        "model",
        parse=parse_size_schedule,
        factory=dict,
    )
    dropout: float = option(0.2, "dropout rate before the 10-way head", "model")
    zero_init_residual: bool = option(
        True, "random init: each residual block's last BatchNorm scale starts at 0", "model"
    )
    epochs: int = option(
        30, "total epochs, all phases; the learning-rate schedule spans them", "optimisation"
    )
    head_epochs: int = option(
        3, "pretrained weights: epochs with the backbone frozen", "optimisation"
    )
    finetune_stages: int | None = option(
        None, "pretrained weights: unfreeze only the top N stages (default: all)", "optimisation"
    )
    batch_size: int = option(64, "images per training step", "optimisation")
    optimizer: str = option(
        "sgd", "sgd (Nesterov, momentum 0.9) or adamw", "optimisation", choices=("sgd", "adamw")
    )
    learning_rate: float = option(0.1, "peak learning rate, after the warm-up", "optimisation")
    finetune_learning_rate: float = option(
        0.01, "peak learning rate of the fine-tuning phase", "optimisation"
    )
    warmup_epochs: float = option(
        1.0, "epochs of linear warm-up, then cosine to 0 (fractions allowed)", "optimisation"
    )
    weight_decay: float = option(
        5e-3, "decoupled weight decay, multiplied by the learning rate (Keras 3)", "optimisation"
    )
    label_smoothing: float = option(
        0.1, "share of the target spread over all classes", "optimisation"
    )
    ema_momentum: float = option(
        0.0,
        "weight averaging: keep an exponential moving average of the weights with this "
        "momentum per step (e.g. 0.999; 0: off); it is validated, kept as best and exported",
        "optimisation",
    )
    mix: str = option("none", "batch mixing", "augmentation", choices=("none", "cutmix", "mixup"))
    mix_prob: float = option(0.5, "share of batches that are mixed", "augmentation")
    cutout: int = option(
        0, "side in px of a square zeroed at random in each image (0: off)", "augmentation"
    )
    color_jitter: float = option(
        0.0,
        "brightness, contrast and saturation each scaled by a factor in [1-s, 1+s] (0: off)",
        "augmentation",
    )
    grayscale_prob: float = option(
        0.0, "share of images made gray (equal channels), as grayscale uploads", "augmentation"
    )
    jpeg_prob: float = option(
        0.0, "share of images JPEG-encoded and decoded again, as JPEG uploads", "augmentation"
    )
    jpeg_quality: str = option(
        "30:95", "range of the JPEG quality, MIN:MAX, drawn uniformly", "augmentation"
    )
    run_dir: str = option("runs/latest", "outputs and checkpoints", "run")
    seed: int = option(0, "weights init, data order, augmentation, validation split", "run")
    precision: str = option(
        "float32",
        "Keras dtype policy; mixed_bfloat16 is ~2x faster on CPUs with AVX-512 BF16",
        "run",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
    )
    jit_compile: bool | None = option(None, "XLA (default: on for JAX, off for TensorFlow)", "run")
    time_budget_min: float | None = option(
        None, "stop cleanly after N minutes of the whole run, keeping the best weights", "run"
    )
    workers: int = option(
        1, "threads preparing augmented batches (results do not depend on it)", "run"
    )
    verbose: int = option(
        2, "Keras progress: 0 silent, 1 bar, 2 one line per epoch", "run", choices=(0, 1, 2)
    )

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.workers >= 1, "workers must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (0 <= self.ema_momentum < 1, "ema_momentum must be in [0, 1)"),
            (0 <= self.cutout <= 32, "cutout must be in [0, 32]"),
            (0 <= self.color_jitter < 1, "color_jitter must be in [0, 1)"),
            (0 <= self.grayscale_prob <= 1, "grayscale_prob must be in [0, 1]"),
            (0 <= self.jpeg_prob <= 1, "jpeg_prob must be in [0, 1]"),
            (0 < self.teacher_weight <= 1, "teacher_weight must be in (0, 1]"),
            (self.internal_size >= 32, "internal_size must be at least 32"),
            (all(s >= 32 for s in self.size_schedule.values()), "sizes must be at least 32"),
            (
                self.init_from is None or self.weights == "none",
                "init_from replaces the backbone weights: give one of the two",
            ),
            (
                self.stem == "imagenet" or self.weights == "none",
                "pretrained weights need the imagenet stem",
            ),
        ]
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                names = ", ".join(str(c) for c in allowed)
                checks.append((False, f"{f.name} must be one of {names}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.jpeg_quality_range()
        return self

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    def jpeg_quality_range(self) -> tuple[int, int]:
        """``jpeg_quality`` as ``(low, high)``, both in 1..95."""
        try:
            low, high = (int(v) for v in self.jpeg_quality.split(":"))
        except ValueError:
            raise ConfigError(
                f"jpeg_quality must look like 30:95, got {self.jpeg_quality!r}"
            ) from None
        if not 1 <= low <= high <= 95:
            raise ConfigError("jpeg_quality must satisfy 1 <= MIN <= MAX <= 95")
        return low, high

    def size_at(self, epoch: int) -> int:
        """Internal size for ``epoch`` (0-based): the last schedule entry at or before it."""
        size = self.internal_size
        starts = sorted(k for k in self.size_schedule if k <= epoch)
        if starts:
            size = self.size_schedule[starts[-1]]
        return size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size_schedule"] = {str(k): v for k, v in self.size_schedule.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key '{unknown[0]}'")
        data = dict(data)
        if "size_schedule" in data:
            data["size_schedule"] = parse_size_schedule(data["size_schedule"])
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: configuration must be a JSON object")
    return data
