"""A run's resumable state and the sessions that made it.

A *session* is one start or resume of the training process: when it started, on which
machine, which epochs it finished and in how many seconds, so a run resumed across machines
says where its time went. Sessions are kept in the checkpoint and in ``history.json``.

After every complete epoch ``RUN/checkpoint/`` holds the weights, the optimizer state, the
weight average (when one is kept) and ``state.json`` (history, best score, elapsed time,
sessions); it is written to a temporary folder and renamed into place, the previous one moved
aside first and deleted last, so a killed process leaves either the previous checkpoint or the
new one (``recover_checkpoint`` puts the previous one back if the kill came between the two).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from training.averaging import WeightAverage
from training.config import ConfigError
from training.provenance import cpu_description, utc_now
from training.run import (
    CHECKPOINT_AVERAGE,
    CHECKPOINT_DIR,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
)


def previous_checkpoint(run_dir: Path) -> Path:
    """Where the previous checkpoint waits while a new one is renamed into place."""
    return Path(run_dir) / (CHECKPOINT_DIR + ".previous")


def recover_checkpoint(run_dir: Path) -> bool:
    """Put the previous checkpoint back where a process killed between the two renames of
    ``RunState.save_checkpoint`` left none; returns whether it did."""
    current, previous = Path(run_dir) / CHECKPOINT_DIR, previous_checkpoint(run_dir)
    if current.exists() or not (previous / CHECKPOINT_STATE).exists():
        return False
    os.replace(previous, current)
    return True


class RunState:
    """Weights, optimizer, weight average, history, best score, elapsed time and sessions.

    ``elapsed`` counts finished epochs and the time since this session's start; an epoch cut
    short by a killed process is repeated on resume and its lost seconds are counted nowhere.
    """

    def __init__(self, run_dir: Path, classifier: keras.Model):
        self.run_dir = run_dir
        self.classifier = classifier
        self.optimizer: keras.Optimizer | None = None
        self.average: WeightAverage | None = None
        self.history: list[dict] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.sessions: list[dict] = []

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def begin_session(self, first_epoch: int) -> None:
        """Record a start (``first_epoch`` 0) or resume on this machine, from now."""
        self.started = time.monotonic()
        self.sessions.append(
            {
                "started_utc": utc_now(),
                "ended_utc": None,
                "first_epoch": first_epoch + 1,
                "last_epoch": None,
                "seconds": 0.0,
                "hardware": cpu_description(),
            }
        )

    def save_weights(self, path: Path) -> None:
        tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
        self.classifier.save_weights(tmp)
        os.replace(tmp, path)

    def save_served_weights(self, path: Path) -> None:
        """The weights a user would get: the average when one is kept, else the trained."""
        if self.average is None:
            self.save_weights(path)
            return
        with self.average.applied():
            self.save_weights(path)

    def save_checkpoint(self, next_epoch: int, phase: str) -> None:
        tmp = self.run_dir / (CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.classifier.save_weights(tmp / CHECKPOINT_WEIGHTS)
        np.savez(
            tmp / CHECKPOINT_OPTIMIZER,
            *[keras.ops.convert_to_numpy(v) for v in self.optimizer.variables],
        )
        if self.average is not None:
            np.savez(tmp / CHECKPOINT_AVERAGE, **self.average.state())
        self.sessions[-1].update(  # begin_session always ran first
            ended_utc=utc_now(),
            last_epoch=next_epoch,
            seconds=round(time.monotonic() - self.started, 1),
        )
        state = {
            "next_epoch": next_epoch,
            "phase": phase,
            "elapsed_s": self.elapsed(),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "sessions": self.sessions,
        }
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(state, indent=1))
        # the previous checkpoint is moved aside, not deleted, until the new one is in place:
        # a kill between the two renames leaves it for ``recover_checkpoint``
        previous = previous_checkpoint(self.run_dir)
        shutil.rmtree(previous, ignore_errors=True)
        if self.ckpt_dir.exists():
            os.replace(self.ckpt_dir, previous)
        os.replace(tmp, self.ckpt_dir)
        shutil.rmtree(previous, ignore_errors=True)

    def load_checkpoint(self) -> dict:
        state = json.loads((self.ckpt_dir / CHECKPOINT_STATE).read_text())
        self.classifier.load_weights(self.ckpt_dir / CHECKPOINT_WEIGHTS)
        self.history = state["history"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.elapsed_before = state["elapsed_s"]
        # "segments" in checkpoints written before sessions had their own name
        self.sessions = state.get("sessions", state.get("segments", []))
        return state

    def restore_average(self) -> None:
        """Load the checkpoint's weight average into ``self.average`` (when both exist)."""
        path = self.ckpt_dir / CHECKPOINT_AVERAGE
        if self.average is None or not path.exists():
            return
        with np.load(path) as saved:
            self.average.load_state({k: saved[k] for k in saved.files})

    def restore_optimizer(self) -> None:
        self.optimizer.build(self.classifier.trainable_variables)
        saved = np.load(self.ckpt_dir / CHECKPOINT_OPTIMIZER)
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(self.optimizer.variables):
            raise ConfigError("checkpoint optimizer state does not match this model")
        for var, value in zip(self.optimizer.variables, values, strict=True):
            var.assign(value)
