"""Weight interpolation of a fine-tuned run with the model it started from (WiSE-FT,
Wortsman et al., "Robust fine-tuning of zero-shot models", 2022).

A run trained with ``init_from`` ends in the same basin as its source, so the straight line
between the two sets of weights is a family of models: ``alpha`` 0 is the source, 1 the
fine-tuned run, and points between often keep the source's accuracy while taking part of what
the fine-tune learnt (here: robustness to the upload augmentations it trained on). Every
floating-point weight is interpolated, BatchNorm statistics included; anything else (counters)
is the fine-tuned run's.

The result is a run directory like any other (the fine-tuned run's configuration, data record
and history, plus ``interpolation.json``), so ``evaluate --run``, ``export`` and the benchmarks
read it as they read a trained one; its card says what it was made of.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from training.config import ConfigError
from training.run import (
    CONFIG,
    DATA_INFO,
    FINAL_WEIGHTS,
    HISTORY,
    INTERPOLATION,
    LEARNING_CURVES,
    load_run_classifier,
)
from training.warm_start import load_initial_weights

_COPIED = (CONFIG, DATA_INFO, HISTORY, LEARNING_CURVES)


def blend(start: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """``(1 - alpha) * start + alpha * tuned`` for each floating-point array, ``tuned`` for
    the rest."""
    return [
        ((1 - alpha) * s + alpha * t).astype(t.dtype) if np.issubdtype(t.dtype, np.floating) else t
        for s, t in zip(start, tuned, strict=True)
    ]


def interpolate_run(run_dir: Path, alpha: float, out_dir: Path) -> Path:
    """Write ``out_dir``: the run whose weights are ``alpha`` of the way from the run's
    ``init_from`` source to its own final weights."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha {alpha}: between 0 (the source) and 1 (the fine-tuned run)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: exists and is not empty")
    classifier, cfg = load_run_classifier(run_dir)
    if not cfg.init_from:
        raise ConfigError(f"{run_dir}: not a fine-tuned run (no init_from to interpolate with)")
    tuned = classifier.get_weights()
    load_initial_weights(classifier, cfg.init_from)
    classifier.set_weights(blend(classifier.get_weights(), tuned, alpha))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    classifier.save_weights(out_dir / FINAL_WEIGHTS)
    record = {"alpha": alpha, "source": cfg.init_from, "fine_tuned_run": str(run_dir)}
    (out_dir / INTERPOLATION).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir


def read_interpolation(run_dir: Path) -> dict | None:
    """The run's ``interpolation.json``, or None for a trained run."""
    path = Path(run_dir) / INTERPOLATION
    return json.loads(path.read_text()) if path.is_file() else None
