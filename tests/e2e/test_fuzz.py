"""Every endpoint fuzzed from its own OpenAPI schema by schemathesis against the live server:
schema-valid requests must all be accepted (2xx), and no request, valid or not, may get a 5xx
(the fuzzing phase: schemathesis's coverage phase enumerates every bound of the 3,072-value pixel
arrays and takes minutes on 2 cores).
Where the schema marks an image (media type ``image/*``, format ``x-image-base64``) the hooks
in ``tests/schemathesis_hooks.py`` supply real ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HOOKS = "tests.schemathesis_hooks"


def _schemathesis(server, tmp_path, mode: str, checks: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        pytest.fail("schemathesis is a test dependency (pip install -e '.[dev]')")
    config = tmp_path / "schemathesis.toml"
    config.write_text("[generation]\nallow-x00 = false\n")
    return subprocess.run(
        [str(cli), "--config-file", str(config), "run", f"{server.base}/openapi.json"]
        + ["--checks", checks, "--mode", mode, "--max-examples", "12", "--phases", "fuzzing"]
        + ["--seed", "20261203", "--no-color"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": HOOKS,
            "PYTHONPATH": str(ROOT),
        },
    )


def _tested(proc: subprocess.CompletedProcess) -> int:
    lines = [line for line in proc.stdout.splitlines() if "Tested:" in line]
    return int(lines[0].split(":")[1].strip()) if lines else 0


def test_every_schema_valid_request_is_accepted(server, tmp_path):
    proc = _schemathesis(
        server, tmp_path, "positive", "not_a_server_error,positive_data_acceptance"
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert _tested(proc) >= 20, proc.stdout[-2000:]


def test_no_request_gets_a_server_error(server, tmp_path):
    proc = _schemathesis(server, tmp_path, "all", "not_a_server_error")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert _tested(proc) >= 20, proc.stdout[-2000:]
