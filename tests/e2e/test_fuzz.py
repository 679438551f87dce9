"""Every endpoint fuzzed from its own OpenAPI schema by schemathesis against the live server,
with schema-valid and schema-violating data: no request may get a 5xx. (Whether every
schema-valid request is accepted is not checked yet: the schemas cannot yet say that a file is
a decodable image or that a tensor's data matches its shape.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_no_endpoint_answers_5xx_to_generated_requests(server, tmp_path):
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists() and shutil.which("schemathesis") is None:
        pytest.fail("schemathesis is a test dependency (pip install -e '.[dev]')")
    config = tmp_path / "schemathesis.toml"
    # Path parameters name the served model, so generated requests reach the handlers.
    config.write_text('[parameters]\n"path.name" = "tiny"\n"path.version" = "1"\n')
    proc = subprocess.run(
        [str(cli), "--config-file", str(config), "run", f"{server.base}/openapi.json"]
        + ["--checks", "not_a_server_error", "--mode", "all", "--max-examples", "15"]
        + ["--seed", "20261203", "--no-color"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    tested = [line for line in proc.stdout.splitlines() if "Tested:" in line]
    assert tested and int(tested[0].split(":")[1].strip()) >= 20, proc.stdout[-2000:]
    assert "generated" in proc.stdout and " failed" not in proc.stdout.split("SUMMARY")[-1]
