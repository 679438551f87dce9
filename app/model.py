"""The served model: a version folder, its model card, and the runtime that computes it.

A model folder holds numbered versions (TF Serving layout); each is a SavedModel with
``model_card.json`` beside it naming the classes. Which runtime and precision compute it is
chosen by ``app.runtimes``; everything above this module sees only ``ServedModel``.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.runtimes import Runtime, RuntimeConfigError, RuntimeLoadError, select

CARD_NAME = "model_card.json"

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model folder is missing, its SavedModel or card is unusable, or the configured
    runtime or precision cannot serve it here."""


@dataclass
class ServedModel:
    """A loaded model version: ``predict`` maps uint8 images to class probabilities."""

    name: str
    version: int
    path: Path
    card: dict
    class_names: list[str]
    runtime: Runtime = field(repr=False)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.runtime.input_size

    @property
    def streams(self) -> int:
        """How many ``predict`` calls compute at once (``Runtime.streams``)."""
        return self.runtime.streams

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.runtime.predict(images)

    def warm_up(self, runs: int, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run the model so the first request does not pay for graph setup: every stream
        (one thread each, all at once), ``runs`` times at each batch size."""
        h, w = self.input_size

        def warm_one_stream() -> None:
            for n in batch_sizes:
                for _ in range(runs):
                    self.predict(np.zeros((n, h, w, 3), dtype=np.uint8))

        if self.streams == 1:
            warm_one_stream()
            return
        with ThreadPoolExecutor(self.streams, thread_name_prefix="warm-up") as pool:
            for done in [pool.submit(warm_one_stream) for _ in range(self.streams)]:
                done.result()  # a failure is raised here

    def describe(self) -> dict:
        """What serves: name, version, runtime, precision and streams (for /model, logs,
        metrics)."""
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime.name,
            "precision": self.runtime.precision,
            "streams": self.runtime.streams,
        }


def resolve_version_dir(model_dir: Path, version: int | None) -> Path:
    """The pinned version's folder, or the highest-numbered one."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model directory not found")
    if version is not None:
        path = model_dir / str(version)
        if not path.is_dir():
            raise ModelLoadError(f"{path}: pinned model version not found")
        return path
    versions = sorted(
        (
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isascii() and p.name.isdigit()
        ),
        reverse=True,
    )
    if not versions:
        raise ModelLoadError(f"{model_dir}: no numbered model version folders inside")
    return model_dir / str(versions[0])


def _read_card(path: Path) -> dict:
    card_path = path / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{card_path}: model card missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{card_path}: unreadable model card ({exc})") from None
    names = card.get("class_names") if isinstance(card, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(f"{card_path}: 'class_names' must be a non-empty list of strings")
    return card


def load_served_model(
    model_dir: Path,
    version: int | None = None,
    runtime: str = "auto",
    precision: str = "auto",
    streams: int = 1,
) -> ServedModel:
    """Load and check a model version (computing ``streams`` batches at once where the
    runtime can); every failure is a one-line ``ModelLoadError``."""
    path = resolve_version_dir(Path(model_dir), version)
    card = _read_card(path)
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path}: no saved_model.pb (not a SavedModel)")
    try:
        loaded = select(runtime, precision, path, card, streams)
    except (RuntimeConfigError, RuntimeLoadError) as exc:
        raise ModelLoadError(str(exc)) from None
    if loaded.num_classes != len(card["class_names"]):
        raise ModelLoadError(
            f"{path}: the model has {loaded.num_classes} outputs, the card "
            f"{len(card['class_names'])} class names"
        )
    model = ServedModel(
        name=card.get("name") or path.parent.name,
        version=int(path.name),
        path=path,
        card=card,
        class_names=card["class_names"],
        runtime=loaded,
    )
    log.info(
        "loaded model %s version %s from %s: runtime %s, precision %s, %d stream(s)",
        model.name,
        model.version,
        path,
        loaded.name,
        loaded.precision,
        loaded.streams,
    )
    return model
