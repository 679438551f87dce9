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
    data: str = "download"
    run_dir: str = "runs/latest"
    weights: str = "none"
    internal_size: int = 64
    size_schedule: dict[int, int] = field(default_factory=dict)
    dropout: float = 0.2
    zero_init_residual: bool = True
    epochs: int = 30
    head_epochs: int = 3
    finetune_stages: int | None = None
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    finetune_learning_rate: float = 0.01
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-3
    label_smoothing: float = 0.1
    mix: str = "none"
    mix_prob: float = 0.5
    val_fraction: float = 0.1
    seed: int = 0
    precision: str = "float32"
    jit_compile: bool | None = None
    time_budget_min: float | None = None
    workers: int = 1
    limit_train: int | None = None
    verbose: int = 2

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
