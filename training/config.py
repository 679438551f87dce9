"""The training configuration: one dataclass, filled from defaults, a JSON file, then flags.

The resolved configuration is written beside every run's outputs (``config.json``) and into
the model card, so any result can be reproduced with ``train --config RUN/config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; written beside it as ``config.json``."""

    data: str = "download"  # CIFAR-10 folder, the official .tar.gz, or "download"
    run_dir: str = "runs/latest"  # outputs and checkpoints
    weights: str = "none"  # backbone init: "none" (random), "imagenet", or a local .h5 path
    internal_size: int = 64  # px the 32x32 input is resized to inside the model (when served)
    size_schedule: dict[int, int] = field(default_factory=dict)  # epoch (0-based) -> px
    dropout: float = 0.2  # dropout rate before the 10-way head
    zero_init_residual: bool = True  # random init: each block's last BN scale starts at 0
    epochs: int = 30  # total epochs, all phases; the cosine schedule spans them
    head_epochs: int = 3  # pretrained weights: epochs with the backbone frozen
    finetune_stages: int | None = None  # pretrained: unfreeze the top N stages (None: all)
    batch_size: int = 64  # images per training step
    optimizer: str = "sgd"  # "sgd" (Nesterov, momentum 0.9) or "adamw"
    learning_rate: float = 0.1  # peak learning rate, after the warm-up
    finetune_learning_rate: float = 0.01  # peak learning rate of the fine-tuning phase
    warmup_epochs: float = 1.0  # epochs of linear warm-up (fractions allowed)
    weight_decay: float = 5e-3  # decoupled, multiplied by the learning rate (Keras 3)
    label_smoothing: float = 0.1  # share of the target spread over all classes
    mix: str = "none"  # batch mixing: "none", "cutmix" or "mixup"
    mix_prob: float = 0.5  # share of batches that are mixed
    val_fraction: float = 0.1  # share of the training set held out for validation
    seed: int = 0  # weights init, data order, augmentation, validation split
    precision: str = "float32"  # Keras dtype policy: float32, mixed_bfloat16, mixed_float16
    jit_compile: bool | None = None  # XLA; None: on for JAX, off for TensorFlow
    time_budget_min: float | None = None  # stop cleanly after N minutes of the whole run
    workers: int = 1  # threads preparing augmented batches (results do not depend on it)
    limit_train: int | None = None  # debug: only the first N training (and validation) images
    verbose: int = 2  # Keras progress: 0 silent, 1 bar, 2 one line per epoch

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.workers >= 1, "workers must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.internal_size >= 32, "internal_size must be at least 32"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be sgd or adamw"),
            (self.mix in ("none", "cutmix", "mixup"), "mix must be none, cutmix or mixup"),
            (
                self.precision in ("float32", "mixed_bfloat16", "mixed_float16"),
                "precision must be float32, mixed_bfloat16 or mixed_float16",
            ),
            (all(s >= 32 for s in self.size_schedule.values()), "sizes must be at least 32"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

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


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: configuration must be a JSON object")
    return data
