"""A training run's directory: its file names, and the model it holds.

``train`` writes a run, ``evaluate``, ``export`` and the benchmarks read it; this module is the
one place that knows the layout:

- ``config.json``: the resolved ``TrainConfig``; ``data.json``: data source, sha256, split sizes;
  ``history.json``: the summary and one row per epoch; ``learning_curves.png`` its figure;
- ``best.weights.h5`` (best validation accuracy so far) and ``model.weights.h5`` (the final
  choice, written when the run ends);
- ``checkpoint/``: ``last.weights.h5``, ``optimizer.npz``, ``state.json`` and, with weight
  averaging, ``average.npz`` after every epoch;
- ``interpolation.json``: only in a run that ``interpolate`` wrote (alpha, source, the
  fine-tuned run).
"""

from __future__ import annotations

import json
from pathlib import Path

from training.config import ConfigError, TrainConfig

CONFIG = "config.json"
DATA_INFO = "data.json"
HISTORY = "history.json"
BEST_WEIGHTS = "best.weights.h5"
FINAL_WEIGHTS = "model.weights.h5"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_WEIGHTS = "last.weights.h5"
CHECKPOINT_OPTIMIZER = "optimizer.npz"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_AVERAGE = "average.npz"
INTERPOLATION = "interpolation.json"
LEARNING_CURVES = "learning_curves.png"


def read_run_config(run_dir: Path) -> TrainConfig:
    """The configuration a run was trained with."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a training run (no {CONFIG})")
    return TrainConfig.from_dict(json.loads(path.read_text()))


def read_json(run_dir: Path, name: str) -> dict:
    """One of the run's JSON files (``DATA_INFO``, ``HISTORY``)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {name} (has the run finished?)")
    return json.loads(path.read_text())


def load_run_classifier(run_dir: Path, precision: str = "float32"):
    """Rebuild a run's classifier (float input at any size) from its config and final weights.

    ``precision`` is the Keras dtype policy the network is rebuilt under (``float32``, what
    ``export`` writes; ``mixed_bfloat16`` for an in-process comparison). Returns
    ``(classifier, config)``.
    """
    import keras

    from training.model import build_classifier

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    weights = run_dir / FINAL_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"{run_dir}: no {FINAL_WEIGHTS} (has the run finished?)")
    keras.mixed_precision.set_global_policy(precision)
    classifier = build_classifier("none", cfg.dropout, stem=cfg.stem)
    classifier.load_weights(weights)
    return classifier, cfg


def load_run_model(
    run_dir: Path,
    internal_size: int | None = None,
    tta_flip: bool = False,
    precision: str = "float32",
    tta_translate: int = 0,
):
    """The run's contract model (uint8 32x32 in, probabilities out) at ``internal_size`` (the
    run's own by default), with or without the test-time averages. Returns ``(model, config)``."""
    from training.model import wrap_for_input

    classifier, cfg = load_run_classifier(run_dir, precision)
    size = internal_size or cfg.internal_size
    return wrap_for_input(classifier, size, tta_flip, tta_translate), cfg
