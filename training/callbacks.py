"""The callbacks of every ``fit``: data order, time budget, session deadline, checkpoints."""

from __future__ import annotations

import json
import time

import keras

from training.augment import AugmentedBatches
from training.checkpoint import RunState
from training.config import TrainConfig
from training.run import BEST_WEIGHTS
from training.schedule import Phase, current_lr


class EpochSetter(keras.callbacks.Callback):
    def __init__(self, dataset: AugmentedBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


class TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly once the run's total wall time passes the budget."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped = True
            self.model.stop_training = True


class SessionDeadline(keras.callbacks.Callback):
    """Ends this session (start or resume) at an epoch boundary when the next epoch would not
    finish by ``deadline`` (a job's time limit): nothing is cut, so nothing is lost or repeated.

    An epoch is expected to take as long as the last finished one, times the growth in pixels
    when the internal size grows (48 to 64 px counts 1.78x; it measured 1.3x on the CPU, so
    the guess errs on the safe side). The first epoch of a fresh run always starts.
    """

    def __init__(self, run: RunState, cfg: TrainConfig, deadline: float | None):
        super().__init__()
        self.run, self.cfg, self.deadline = run, cfg, deadline
        self.reached = False

    def fits(self, epoch: int) -> bool:
        finished = [r for r in self.run.history if r["complete"]]
        if self.deadline is None or not finished:
            return True
        last = finished[-1]
        growth = max(1.0, (self.cfg.size_at(epoch) / last["internal_size"]) ** 2)
        return time.monotonic() + last["seconds"] * growth <= self.deadline

    def check(self, next_epoch: int) -> bool:
        """Whether training may go on with ``next_epoch``; records the answer."""
        self.reached = next_epoch < self.cfg.epochs and not self.fits(next_epoch)
        return not self.reached

    def on_epoch_end(self, epoch, logs=None):
        if not self.check(epoch + 1):
            self.model.stop_training = True


def epoch_score(row: dict) -> float:
    """What "best" means: validation accuracy of the weights a user gets (the average when one
    is kept), or training accuracy without a validation split."""
    for key in ("ema_val_accuracy", "val_accuracy", "accuracy"):
        if key in row:
            return row[key]
    raise KeyError("the epoch has no accuracy to score")


class Checkpointer(keras.callbacks.Callback):
    """Per epoch: history row, best weights by ``epoch_score``, and a resumable checkpoint.

    An epoch cut short by the time budget is not checkpointed as complete, so a resume
    repeats it from its start; its weights still compete for "best".
    """

    def __init__(self, run: RunState, phase: Phase, size: int, budget: TimeBudget):
        super().__init__()
        self.run, self.phase, self.size, self.budget = run, phase, size, budget

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "phase": self.phase.name,
            "internal_size": self.size,
            "learning_rate": current_lr(self.run.optimizer),
            "seconds": round(time.monotonic() - self.t0, 1),
            "complete": not self.budget.stopped,
            **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
        }
        self.run.history.append(row)
        score = epoch_score(row)
        if self.run.best is None or score > self.run.best:
            self.run.best, self.run.best_epoch = score, epoch + 1
            self.run.save_served_weights(self.run.run_dir / BEST_WEIGHTS)
        if not self.budget.stopped:
            self.run.save_checkpoint(next_epoch=epoch + 1, phase=self.phase.name)
        print(json.dumps(row), flush=True)
