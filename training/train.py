"""The training run: data recording, orchestration of phases and size stages, the report.

From random init there is one phase that trains everything. With pretrained backbone weights
there are two (the keras-io transfer-learning recipe): ``head`` trains the new head with the
backbone frozen, ``finetune`` unfreezes all or the top N stages at a lower learning rate with
BatchNorm kept frozen (``schedule.py``). Each size stage is one ``fit``.

Every epoch ends with a checkpoint (``checkpoint.py``); ``resume`` continues with the same
schedule, optimizer state, weight average and data order. Each start or resume is a session.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.augment import AugmentedBatches, UploadAugmentation, one_hot
from training.averaging import WeightAverage
from training.callbacks import Checkpointer, EpochSetter, SessionDeadline, TimeBudget
from training.checkpoint import RunState, recover_checkpoint
from training.config import ConfigError, TrainConfig
from training.data import Split, load_cifar10, split_validation
from training.distill import TeacherTargets
from training.evaluate import classification_report, keras_predictor, predict
from training.model import backbone_of, build_classifier, set_backbone_trainable, wrap_for_input
from training.plots import plot_confusion_matrix, plot_learning_curves
from training.provenance import cpu_description
from training.run import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    CONFIG,
    DATA_INFO,
    FINAL_WEIGHTS,
    HISTORY,
    LEARNING_CURVES,
)
from training.schedule import make_optimizer, plan_phases, resolve_jit_compile, size_stages
from training.warm_start import load_initial_weights


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_val_accuracy: float | None
    epochs_completed: int
    stopped_by_budget: bool
    wall_time_s: float
    stopped_at_deadline: bool = False


@dataclass
class _Prepared:
    train: Split
    val: Split
    class_names: list[str]

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(images, one-hot targets)`` of the validation split, or ``None`` without one."""
        return (self.val.x, one_hot(self.val.y)) if len(self.val) else None


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
    session_min: float | None = None,
) -> TrainResult:
    """Train per ``cfg`` into ``cfg.run_dir``; with ``resume``, continue its checkpoint.

    Extra ``callbacks`` run after the checkpoint of each epoch has been written. With
    ``session_min``, this call ends at the last epoch boundary that it expects to reach within
    that many minutes of its start (``SessionDeadline``); ``resume`` continues from there.
    """
    started = time.monotonic()
    if session_min is not None and session_min <= 0:
        raise ConfigError("the session's minutes must be positive")
    cfg.validate()
    run_dir = Path(cfg.run_dir)
    recover_checkpoint(run_dir)
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
        cfg.weights, cfg.dropout, zero_init_residual=cfg.zero_init_residual, stem=cfg.stem
    )
    if cfg.init_from and not resume:  # a resumed run's checkpoint holds the weights
        load_initial_weights(classifier, cfg.init_from)
    run = RunState(run_dir, classifier)
    if cfg.ema_momentum:
        run.average = WeightAverage(classifier, cfg.ema_momentum, data.validation)
    first_epoch, resume_phase = 0, None
    if resume:
        state = run.load_checkpoint()
        run.restore_average()
        first_epoch, resume_phase = state["next_epoch"], state["phase"]
    run.begin_session(first_epoch)
    deadline = None
    if cfg.time_budget_min is not None:
        deadline = time.monotonic() + cfg.time_budget_min * 60 - run.elapsed_before
    budget = TimeBudget(deadline)
    session_end = SessionDeadline(
        run, cfg, None if session_min is None else started + session_min * 60
    )
    if session_end.check(first_epoch):
        _fit_phases(cfg, data, run, budget, session_end, first_epoch, resume_phase, callbacks)
    return _finish_run(cfg, data, run, budget, session_end)


def _fit_phases(
    cfg: TrainConfig,
    data: _Prepared,
    run: RunState,
    budget: TimeBudget,
    session_end: SessionDeadline,
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
        cutout=cfg.cutout,
        upload=UploadAugmentation(
            cfg.color_jitter, cfg.grayscale_prob, cfg.jpeg_prob, cfg.jpeg_quality_range()
        ),
        teacher=TeacherTargets.from_config(cfg) if cfg.teacher else None,
        workers=cfg.workers,
    )
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
        for start, end, size in size_stages(cfg, phase, first_epoch):
            model = wrap_for_input(classifier, size)
            model.compile(run.optimizer, loss, metrics=["accuracy"], jit_compile=jit_compile)
            model.fit(
                dataset,
                validation_data=data.validation,
                batch_size=cfg.batch_size,
                shuffle=False,  # order is the dataset's, per (seed, epoch), so resume is exact
                initial_epoch=start,
                epochs=end,
                verbose=cfg.verbose,
                callbacks=[
                    EpochSetter(dataset),
                    budget,
                    *([run.average] if run.average else []),
                    Checkpointer(run, phase, size, budget),
                    session_end,
                    *callbacks,
                ],
            )
            if budget.stopped or session_end.reached:
                return


def _finish_run(
    cfg: TrainConfig,
    data: _Prepared,
    run: RunState,
    budget: TimeBudget,
    session_end: SessionDeadline,
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
        "stopped_at_deadline": session_end.reached,
        "wall_time_s": round(run.elapsed(), 1),
        "hardware": cpu_description(),
        "sessions": run.sessions,
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
    plot_learning_curves(run.history, run_dir / LEARNING_CURVES)
    return TrainResult(
        run_dir,
        run.history,
        summary["best_val_accuracy"],
        summary["epochs_completed"],
        budget.stopped,
        summary["wall_time_s"],
        session_end.reached,
    )
