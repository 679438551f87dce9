"""The training loop: outputs, phases, progressive resizing, exact resume, the time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import tiny_config
from training.config import ConfigError, TrainConfig
from training.schedule import plan_phases, size_stages
from training.train import train

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
    assert size_stages(cfg, full, 3) == [(3, 4, 48), (4, 6, 64)]
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
    (session,) = history["summary"]["sessions"]
    assert (session["first_epoch"], session["last_epoch"]) == (1, 1)
    assert session["hardware"] == history["summary"]["hardware"]
    assert 0 < session["seconds"] <= history["summary"]["wall_time_s"]
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
    kw = dict(
        epochs=2, size_schedule={0: 32, 1: 40}, learning_rate=0.001, dropout=0.0, ema_momentum=0.9
    )
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
    assert all("ema_val_accuracy" in row for row in resumed.history)
    with (
        np.load(cut / "checkpoint" / "average.npz") as a,
        np.load(tmp_path / "whole" / "checkpoint" / "average.npz") as b,
    ):  # the weight average went on across the interruption as if there had been none
        assert int(a["updates"]) == int(b["updates"]) >= 1 and a.files == b.files
        for name in a.files:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-5)
    first, second = state["sessions"]  # the interrupted start, then the resume
    assert [(s["first_epoch"], s["last_epoch"]) for s in (first, second)] == [(1, 1), (2, 2)]
    assert first["ended_utc"] <= second["started_utc"] <= second["ended_utc"]
    assert all(s["hardware"]["cores"] == os.cpu_count() for s in (first, second))
    assert first["seconds"] + second["seconds"] == pytest.approx(state["elapsed_s"], abs=0.2)


@pytest.mark.slow
def test_session_deadline_ends_at_an_epoch_boundary_and_resume_goes_on(cifar_dir, tmp_path):
    """A job's time limit: stop where the next epoch would not fit, lose nothing, resume."""
    cfg = tiny_config(cifar_dir, tmp_path, epochs=3)
    first = train(cfg, session_min=1e-4)  # a fresh run's first epoch always starts
    assert first.stopped_at_deadline and not first.stopped_by_budget
    assert [(r["epoch"], r["complete"]) for r in first.history] == [(1, True)]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["next_epoch"] == 1
    assert not (tmp_path / "checkpoint.previous").exists()  # deleted once the new one is in
    # killed between save_checkpoint's two renames: only the previous checkpoint is left
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.previous")
    idle = train(cfg, resume=True, session_min=1e-4)  # not even one epoch fits: none starts
    assert idle.stopped_at_deadline and [r["epoch"] for r in idle.history] == [1]
    rest = train(cfg, resume=True, session_min=60)
    assert not rest.stopped_at_deadline and rest.epochs_completed == 3
    assert [r["epoch"] for r in rest.history] == [1, 2, 3]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert [(s["first_epoch"], s["last_epoch"]) for s in state["sessions"]] == [(1, 1), (2, 3)]
    with pytest.raises(ConfigError, match="minutes must be positive"):
        train(cfg, resume=True, session_min=0)


KILLED_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from tests.helpers import tiny_config
from training.train import train

rename = os.replace


def rename_then_die(src, dst):
    rename(src, dst)
    if str(dst).endswith("checkpoint.previous"):  # the old checkpoint is aside, the new not in
        os._exit(137)


os.replace = rename_then_die
train(tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), epochs=2))
"""


@pytest.mark.slow
def test_a_process_killed_between_the_checkpoint_renames_loses_only_that_epoch(cifar_dir, tmp_path):
    """Epoch 2's checkpoint: the process dies after epoch 1's checkpoint was moved aside and
    before epoch 2's was renamed into place. Resume finds epoch 1's and redoes epoch 2."""
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(cifar_dir), str(run_dir)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (run_dir / "checkpoint").exists()
    aside = json.loads((run_dir / "checkpoint.previous" / "state.json").read_text())
    assert aside["next_epoch"] == 1  # epoch 1's, complete
    resumed = train(tiny_config(cifar_dir, run_dir, epochs=2), resume=True)
    assert resumed.epochs_completed == 2 and [r["epoch"] for r in resumed.history] == [1, 2]
    assert not (run_dir / "checkpoint.previous").exists()


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


def test_every_config_field_is_a_train_flag_with_its_help_choices_and_type(tmp_path):
    """The flags are derived from TrainConfig: a new field is a flag without a second line."""
    import argparse
    from dataclasses import fields

    from training.cli import build_parser, resolve_train_config

    parser = build_parser()
    (train_parser,) = [
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train")
    ]
    flags = {a.dest: a for a in train_parser._actions}
    for f in fields(TrainConfig):
        assert f.name in flags, f.name
        assert flags[f.name].help.startswith(f.metadata["help"])
        assert flags[f.name].choices == f.metadata["choices"]
    assert isinstance(flags["zero_init_residual"], argparse.BooleanOptionalAction)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": 7, "stem": "cifar", "jpeg_prob": 0.3}))
    args = parser.parse_args(
        [
            "train",
            "--config",
            str(config),
            "--ema-momentum",
            "0.99",
            "--no-zero-init-residual",
            "--size-schedule",
            "0:32,3:48",
            "--epochs",
            "9",
        ]
    )
    cfg = resolve_train_config(args)
    assert (cfg.epochs, cfg.stem, cfg.jpeg_prob, cfg.ema_momentum) == (9, "cifar", 0.3, 0.99)
    assert cfg.zero_init_residual is False and cfg.size_schedule == {0: 32, 3: 48}
    with pytest.raises(ConfigError, match="stem must be one of imagenet, cifar"):
        TrainConfig(stem="tiny").validate()
    with pytest.raises(ConfigError, match="jpeg_quality must look like 30:95"):
        TrainConfig(jpeg_quality="high").validate()
    with pytest.raises(ConfigError, match="pretrained weights need the imagenet stem"):
        TrainConfig(weights="imagenet", stem="cifar").validate()
