"""The training loop: phases, progressive resizing, checkpoints, exact resume, time budget.

From random init there is one phase that trains everything. With pretrained backbone weights
there are two (the keras-io transfer-learning recipe): ``head`` trains the new head with the
backbone frozen, ``finetune`` unfreezes all or the top N stages at a lower learning rate with
BatchNorm kept frozen.

Every epoch ends with a checkpoint in ``RUN/checkpoint/`` (weights, optimizer state, history,
elapsed time, segments); ``resume`` continues with the same schedule, optimizer state and data
order. Each start or resume is a segment: when it started, on which machine, which epochs it
finished and in how many seconds, so a run resumed across machines says where its time went.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.augment import AugmentedBatches, one_hot
from training.config import ConfigError, TrainConfig
from training.data import Split, load_cifar10, split_validation
from training.evaluate import classification_report, keras_predictor, predict
from training.model import backbone_of, build_classifier, set_backbone_trainable, wrap_for_input
from training.plots import plot_confusion_matrix, plot_learning_curves
from training.provenance import cpu_description, utc_now
from training.run import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    CONFIG,
    DATA_INFO,
    FINAL_WEIGHTS,
    HISTORY,
)


@dataclass(frozen=True)
class Phase:
    name: str
    start: int
    end: int
    learning_rate: float


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_val_accuracy: float | None
    epochs_completed: int
    stopped_by_budget: bool
    wall_time_s: float
    stopped_at_deadline: bool = False


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    if not cfg.pretrained or cfg.head_epochs <= 0:
        return [Phase("full", 0, cfg.epochs, cfg.learning_rate)]
    head_end = min(cfg.head_epochs, cfg.epochs)
    phases = [Phase("head", 0, head_end, cfg.learning_rate)]
    if cfg.epochs > head_end:
        phases.append(Phase("finetune", head_end, cfg.epochs, cfg.finetune_learning_rate))
    return phases


def segments(cfg: TrainConfig, phase: Phase, first_epoch: int) -> list[tuple[int, int, int]]:
    """Split ``[first_epoch, phase.end)`` into runs of equal internal size: (start, end, size)."""
    out: list[tuple[int, int, int]] = []
    for epoch in range(max(first_epoch, phase.start), phase.end):
        size = cfg.size_at(epoch)
        if out and out[-1][2] == size:
            out[-1] = (out[-1][0], epoch + 1, size)
        else:
            out.append((epoch, epoch + 1, size))
    return out


def make_optimizer(cfg: TrainConfig, peak_lr: float, total_steps: int) -> keras.Optimizer:
    """SGD (Nesterov) or AdamW with linear warm-up then cosine decay to zero.

    Keras 3's ``weight_decay`` is decoupled and scaled by the learning rate; BatchNorm
    parameters and biases are excluded from it.
    """
    warmup = min(int(cfg.warmup_epochs * total_steps / max(cfg.epochs, 1)), total_steps - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_lr if warmup == 0 else peak_lr / 100,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.0,
        warmup_target=peak_lr if warmup else None,
        warmup_steps=warmup,
    )
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt


def resolve_jit_compile(cfg: TrainConfig) -> bool:
    """XLA on JAX (where it is the fast path); off on TensorFlow, where XLA measured 5x slower
    for this model on CPU."""
    if cfg.jit_compile is not None:
        return cfg.jit_compile
    return keras.backend.backend() == "jax"


def current_lr(opt: keras.Optimizer) -> float:
    lr = opt.learning_rate
    return float(keras.ops.convert_to_numpy(lr(opt.iterations) if callable(lr) else lr))


class _EpochSetter(keras.callbacks.Callback):
    def __init__(self, dataset: AugmentedBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


class _TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly once the run's total wall time passes the budget."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped = True
            self.model.stop_training = True


class _SegmentDeadline(keras.callbacks.Callback):
    """Ends this start or resume at an epoch boundary when the next epoch would not finish by
    ``deadline`` (a job's time limit): nothing is cut, so nothing is lost or repeated.

    An epoch is expected to take as long as the last finished one, times the growth in pixels
    when the internal size grows (48 to 64 px counts 1.78x; it measured 1.3x on the CPU, so
    the guess errs on the safe side). The first epoch of a fresh run always starts.
    """

    def __init__(self, run: _RunState, cfg: TrainConfig, deadline: float | None):
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


class _Checkpointer(keras.callbacks.Callback):
    """Per epoch: history row, best weights by validation accuracy, and a resumable checkpoint.

    An epoch cut short by the time budget is not checkpointed as complete, so a resume
    repeats it from its start; its weights still compete for "best".
    """

    def __init__(self, run: _RunState, phase: Phase, size: int, budget: _TimeBudget):
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
        score = row.get("val_accuracy", row.get("accuracy"))
        if self.run.best is None or score > self.run.best:
            self.run.best, self.run.best_epoch = score, epoch + 1
            self.run.save_weights(self.run.run_dir / BEST_WEIGHTS)
        if not self.budget.stopped:
            self.run.save_checkpoint(next_epoch=epoch + 1, phase=self.phase.name)
        print(json.dumps(row), flush=True)


class _RunState:
    """What a checkpoint holds: weights, optimizer state, history, best score, elapsed time,
    and the segments (one per start or resume) that made it.

    ``elapsed`` counts finished epochs and the time since this segment's start; an epoch cut
    short by a killed process is repeated on resume and its lost seconds are counted nowhere.
    """

    def __init__(self, run_dir: Path, classifier: keras.Model):
        self.run_dir = run_dir
        self.classifier = classifier
        self.optimizer: keras.Optimizer | None = None
        self.history: list[dict] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.segments: list[dict] = []

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def begin_segment(self, first_epoch: int) -> None:
        """Record a start (``first_epoch`` 0) or resume on this machine, from now."""
        self.started = time.monotonic()
        self.segments.append(
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

    def save_checkpoint(self, next_epoch: int, phase: str) -> None:
        tmp = self.run_dir / (CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.classifier.save_weights(tmp / CHECKPOINT_WEIGHTS)
        np.savez(
            tmp / CHECKPOINT_OPTIMIZER,
            *[keras.ops.convert_to_numpy(v) for v in self.optimizer.variables],
        )
        self.segments[-1].update(  # begin_segment always ran first
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
            "segments": self.segments,
        }
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        os.replace(tmp, self.ckpt_dir)

    def load_checkpoint(self) -> dict:
        state = json.loads((self.ckpt_dir / CHECKPOINT_STATE).read_text())
        self.classifier.load_weights(self.ckpt_dir / CHECKPOINT_WEIGHTS)
        self.history = state["history"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.elapsed_before = state["elapsed_s"]
        self.segments = state.get("segments", [])  # absent in checkpoints before segments
        return state

    def restore_optimizer(self) -> None:
        self.optimizer.build(self.classifier.trainable_variables)
        saved = np.load(self.ckpt_dir / CHECKPOINT_OPTIMIZER)
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(self.optimizer.variables):
            raise ConfigError("checkpoint optimizer state does not match this model")
        for var, value in zip(self.optimizer.variables, values, strict=True):
            var.assign(value)


@dataclass
class _Prepared:
    train: Split
    val: Split
    class_names: list[str]


def _prepare_data(cfg: TrainConfig, run_dir: Path) -> _Prepared:
    """Load and split the data, and record the configuration and data beside the run."""
    data = load_cifar10(cfg.data)
    train_split, val = split_validation(data.train, cfg.val_fraction, cfg.seed)
    if cfg.limit_train:
        train_split = Split(train_split.x[: cfg.limit_train], train_split.y[: cfg.limit_train])
        val = Split(val.x[: cfg.limit_train], val.y[: cfg.limit_train])
    if len(train_split) < cfg.batch_size:
        raise ConfigError(
            f"{len(train_split)} training images cannot fill one batch of {cfg.batch_size}"
        )
    cfg.write(run_dir / CONFIG)
    (run_dir / DATA_INFO).write_text(
        json.dumps(
            {
                "source": data.source,
                "sha256": data.sha256,
                "class_names": data.class_names,
                "train_images": len(train_split),
                "val_images": len(val),
            },
            indent=2,
        )
    )
    return _Prepared(train_split, val, data.class_names)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    callbacks: list[keras.callbacks.Callback] = (),
    segment_min: float | None = None,
) -> TrainResult:
    """Train per ``cfg`` into ``cfg.run_dir``; with ``resume``, continue its checkpoint.

    Extra ``callbacks`` run after the checkpoint of each epoch has been written. With
    ``segment_min``, this call ends at the last epoch boundary that it expects to reach within
    that many minutes of its start (``_SegmentDeadline``); ``resume`` continues from there.
    """
    started = time.monotonic()
    if segment_min is not None and segment_min <= 0:
        raise ConfigError("the segment's minutes must be positive")
    cfg.validate()
    run_dir = Path(cfg.run_dir)
    if (run_dir / CHECKPOINT_DIR).exists() and not resume:
        raise ConfigError(
            f"{run_dir}: already holds a checkpoint; pass --resume or a new --run-dir"
        )
    if resume and not (run_dir / CHECKPOINT_DIR / CHECKPOINT_STATE).exists():
        raise ConfigError(f"{run_dir}: no checkpoint to resume")
    run_dir.mkdir(parents=True, exist_ok=True)

    keras.mixed_precision.set_global_policy(cfg.precision)
    keras.utils.set_random_seed(cfg.seed)
    data = _prepare_data(cfg, run_dir)
    classifier = build_classifier(
        cfg.weights, cfg.dropout, zero_init_residual=cfg.zero_init_residual
    )
    run = _RunState(run_dir, classifier)
    first_epoch, resume_phase = 0, None
    if resume:
        state = run.load_checkpoint()
        first_epoch, resume_phase = state["next_epoch"], state["phase"]
    run.begin_segment(first_epoch)
    deadline = None
    if cfg.time_budget_min is not None:
        deadline = time.monotonic() + cfg.time_budget_min * 60 - run.elapsed_before
    budget = _TimeBudget(deadline)
    segment_end = _SegmentDeadline(
        run, cfg, None if segment_min is None else started + segment_min * 60
    )
    if segment_end.check(first_epoch):
        _fit_phases(cfg, data, run, budget, segment_end, first_epoch, resume_phase, callbacks)
    return _finish_run(cfg, data, run, budget, segment_end)


def _fit_phases(
    cfg: TrainConfig,
    data: _Prepared,
    run: _RunState,
    budget: _TimeBudget,
    segment_end: _SegmentDeadline,
    first_epoch: int,
    resume_phase: str | None,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """Fit every phase from ``first_epoch`` on, one ``fit`` per run of equal internal size."""
    classifier = run.classifier
    dataset = AugmentedBatches(
        data.train.x,
        data.train.y,
        cfg.batch_size,
        cfg.seed,
        mix=cfg.mix,
        mix_prob=cfg.mix_prob,
        workers=cfg.workers,
    )
    validation = (data.val.x, one_hot(data.val.y)) if len(data.val) else None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    jit_compile = resolve_jit_compile(cfg)

    for phase in plan_phases(cfg):
        if first_epoch >= phase.end:
            continue
        if phase.name == "head":
            backbone_of(classifier).trainable = False
        elif phase.name == "finetune":
            set_backbone_trainable(classifier, cfg.finetune_stages)
        run.optimizer = make_optimizer(
            cfg, phase.learning_rate, (phase.end - phase.start) * len(dataset)
        )
        if resume_phase == phase.name:
            run.restore_optimizer()
        for start, end, size in segments(cfg, phase, first_epoch):
            model = wrap_for_input(classifier, size)
            model.compile(run.optimizer, loss, metrics=["accuracy"], jit_compile=jit_compile)
            model.fit(
                dataset,
                validation_data=validation,
                batch_size=cfg.batch_size,
                shuffle=False,  # order is the dataset's, per (seed, epoch), so resume is exact
                initial_epoch=start,
                epochs=end,
                verbose=cfg.verbose,
                callbacks=[
                    _EpochSetter(dataset),
                    budget,
                    _Checkpointer(run, phase, size, budget),
                    segment_end,
                    *callbacks,
                ],
            )
            if budget.stopped or segment_end.reached:
                return


def _finish_run(
    cfg: TrainConfig,
    data: _Prepared,
    run: _RunState,
    budget: _TimeBudget,
    segment_end: _SegmentDeadline,
) -> TrainResult:
    """Keep the best weights as the final ones; write the summary, history and figures."""
    run_dir, classifier, val = run.run_dir, run.classifier, data.val
    if (run_dir / BEST_WEIGHTS).exists():
        classifier.load_weights(run_dir / BEST_WEIGHTS)
    run.save_weights(run_dir / FINAL_WEIGHTS)
    summary = {
        "best_val_accuracy": run.best if len(val) else None,
        "best_epoch": run.best_epoch,
        "epochs_completed": sum(1 for r in run.history if r["complete"]),
        "stopped_by_budget": budget.stopped,
        "stopped_at_deadline": segment_end.reached,
        "wall_time_s": round(run.elapsed(), 1),
        "hardware": cpu_description(),
        "segments": run.segments,
        "backend": keras.backend.backend(),
    }
    if len(val):
        final = wrap_for_input(classifier, cfg.size_at(cfg.epochs - 1))
        report = classification_report(
            val.y, predict(keras_predictor(final), val.x), data.class_names
        )
        summary["final_val_accuracy"] = report["accuracy"]
        plot_confusion_matrix(
            report["confusion_matrix"],
            data.class_names,
            run_dir / "confusion_matrix_val.png",
            f"validation: accuracy {report['accuracy']:.2%}",
        )
    (run_dir / HISTORY).write_text(
        json.dumps({"summary": summary, "epochs": run.history}, indent=2)
    )
    plot_learning_curves(run.history, run_dir / "learning_curves.png")
    return TrainResult(
        run_dir,
        run.history,
        summary["best_val_accuracy"],
        summary["epochs_completed"],
        budget.stopped,
        summary["wall_time_s"],
        segment_end.reached,
    )
