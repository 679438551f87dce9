"""The training loop: outputs, phases, progressive resizing, exact resume, the time budget."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from tests.helpers import tiny_config
from training.config import ConfigError, TrainConfig
from training.train import plan_phases, segments, train

DECLARED_OUTPUTS = [
    "config.json",
    "data.json",
    "history.json",
    "model.weights.h5",
    "best.weights.h5",
    "learning_curves.png",
    "confusion_matrix_val.png",
    "checkpoint/state.json",
    "checkpoint/last.weights.h5",
    "checkpoint/optimizer.npz",
]


def test_phases_and_size_schedule_are_planned_from_the_config():
    cfg = TrainConfig(epochs=6, size_schedule={0: 32, 2: 48, 4: 64})
    assert [cfg.size_at(e) for e in range(6)] == [32, 32, 48, 48, 64, 64]
    (full,) = plan_phases(cfg)
    assert (full.name, full.start, full.end) == ("full", 0, 6)
    assert segments(cfg, full, 3) == [(3, 4, 48), (4, 6, 64)]
    pre = TrainConfig(epochs=5, weights="imagenet", head_epochs=2, finetune_learning_rate=0.001)
    assert [(p.name, p.start, p.end, p.learning_rate) for p in plan_phases(pre)] == [
        ("head", 0, 2, pre.learning_rate),
        ("finetune", 2, 5, 0.001),
    ]


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="unknown configuration key 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        TrainConfig(workers=0).validate()


def test_too_small_training_set_is_a_config_error(cifar_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"\d+ training images cannot fill one batch of 128"):
        train(TrainConfig(data=str(cifar_dir), run_dir=str(tmp_path), batch_size=128))


@pytest.mark.slow
def test_smoke_run_writes_every_declared_output(trained_run):
    for name in DECLARED_OUTPUTS:
        assert (trained_run / name).is_file(), name
    history = json.loads((trained_run / "history.json").read_text())
    (row,) = history["epochs"]
    assert {
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "internal_size",
    } <= set(row)
    assert history["summary"]["epochs_completed"] == 1
    assert history["summary"]["hardware"]["cores"] == os.cpu_count()
    (segment,) = history["summary"]["segments"]
    assert (segment["first_epoch"], segment["last_epoch"]) == (1, 1)
    assert segment["hardware"] == history["summary"]["hardware"]
    assert 0 < segment["seconds"] <= history["summary"]["wall_time_s"]
    assert json.loads((trained_run / "config.json").read_text())["internal_size"] == 32


@pytest.mark.slow
def test_progressive_resizing_and_exact_resume(cifar_dir, tmp_path):
    """Interrupt after epoch 1 (checkpoint written), resume, and match an uninterrupted run.

    The interrupted run loads its batches on 2 threads, the uninterrupted one on 1: the
    batches, and so the losses, must not depend on it.
    """

    class Killed(Exception):
        pass

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Killed  # like a SIGKILL right after the epoch's checkpoint was written

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # so "same" can be checked exactly
    kw = dict(epochs=2, size_schedule={0: 32, 1: 40}, learning_rate=0.001, dropout=0.0)
    whole = train(tiny_config(cifar_dir, tmp_path / "whole", **kw))
    cut = tmp_path / "cut"
    threaded = dict(kw, workers=2)
    with pytest.raises(Killed):
        train(tiny_config(cifar_dir, cut, **threaded), callbacks=[KillAfterFirstEpoch()])
    assert json.loads((cut / "checkpoint" / "state.json").read_text())["next_epoch"] == 1
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train(tiny_config(cifar_dir, cut, **threaded))
    resumed = train(tiny_config(cifar_dir, cut, **threaded), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert [r["internal_size"] for r in resumed.history] == [32, 40]
    assert resumed.history[1]["learning_rate"] == pytest.approx(whole.history[1]["learning_rate"])
    assert resumed.history[1]["loss"] == pytest.approx(whole.history[1]["loss"], rel=1e-3)
    state = json.loads((cut / "checkpoint" / "state.json").read_text())
    assert state["next_epoch"] == 2
    first, second = state["segments"]  # the interrupted start, then the resume
    assert [(s["first_epoch"], s["last_epoch"]) for s in (first, second)] == [(1, 1), (2, 2)]
    assert first["ended_utc"] <= second["started_utc"] <= second["ended_utc"]
    assert all(s["hardware"]["cores"] == os.cpu_count() for s in (first, second))
    assert first["seconds"] + second["seconds"] == pytest.approx(state["elapsed_s"], abs=0.2)


@pytest.mark.slow
def test_segment_deadline_ends_at_an_epoch_boundary_and_resume_goes_on(cifar_dir, tmp_path):
    """A job's time limit: stop where the next epoch would not fit, lose nothing, resume."""
    cfg = tiny_config(cifar_dir, tmp_path, epochs=3)
    first = train(cfg, segment_min=1e-4)  # a fresh run's first epoch always starts
    assert first.stopped_at_deadline and not first.stopped_by_budget
    assert [(r["epoch"], r["complete"]) for r in first.history] == [(1, True)]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["next_epoch"] == 1
    idle = train(cfg, resume=True, segment_min=1e-4)  # not even one epoch fits: none starts
    assert idle.stopped_at_deadline and [r["epoch"] for r in idle.history] == [1]
    rest = train(cfg, resume=True, segment_min=60)
    assert not rest.stopped_at_deadline and rest.epochs_completed == 3
    assert [r["epoch"] for r in rest.history] == [1, 2, 3]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert [(s["first_epoch"], s["last_epoch"]) for s in state["segments"]] == [(1, 1), (2, 3)]
    with pytest.raises(ConfigError, match="minutes must be positive"):
        train(cfg, resume=True, segment_min=0)


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_keeps_weights(cifar_dir, tmp_path):
    result = train(tiny_config(cifar_dir, tmp_path, epochs=3, time_budget_min=1e-4))
    assert result.stopped_by_budget and result.epochs_completed == 0
    assert (tmp_path / "model.weights.h5").is_file()
    assert not (tmp_path / "checkpoint").exists()  # a cut epoch is not checkpointed as done


@pytest.mark.slow
def test_pretrained_weights_run_head_then_finetune(cifar_dir, tmp_path, local_backbone_weights):
    result = train(
        tiny_config(
            cifar_dir,
            tmp_path,
            weights=str(local_backbone_weights),
            epochs=2,
            head_epochs=1,
            finetune_stages=1,
        )
    )
    assert [r["phase"] for r in result.history] == ["head", "finetune"]
    assert all(np.isfinite(r["loss"]) for r in result.history)
