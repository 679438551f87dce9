"""The training guide's example runs as written (on generated data instead of /tmp/cifar10)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import write_cifar_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def guide_training_commands() -> list[str]:
    text = (ROOT / "docs" / "training.md").read_text().replace("\\\n", " ")
    return [
        re.sub(r"\s+", " ", line.strip())
        for line in text.splitlines()
        if line.strip().startswith(".venv/bin/cifar10-model ")
    ]


def test_guide_train_evaluate_export_quantize_example(tmp_path):
    cifar_dir = write_cifar_dir(tmp_path / "data", per_batch=40)  # 180 training images
    commands = guide_training_commands()
    assert [c.split()[1] for c in commands] == ["train", "evaluate", "export", "quantize"]
    cli = Path(__import__("sys").executable).parent / "cifar10-model"
    for command in commands:
        command = command.replace("/tmp/cifar10/cifar-10-batches-py", str(cifar_dir))
        command = command.replace("runs/quick", str(tmp_path / "quick"))
        command = command.replace("/tmp/models", str(tmp_path / "models"))
        argv = [str(cli), *shlex.split(command)[1:]]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    version = tmp_path / "models" / "cifar10-resnet50" / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "openvino-int8" / "model.xml").is_file()
