"""Every endpoint fuzzed from its own OpenAPI schema by schemathesis against the live server.

Two runs. *Every check*: all of schemathesis's checks (every status, content type and header
the server sends is in the document; schema-valid requests are accepted and schema-violating
ones refused) in the coverage, fuzzing and stateful phases; where the schema marks an image
(media type ``image/*``, format ``x-image-base64``) the hooks in ``tests/schemathesis_hooks.py``
supply a real one. *No server error*: positive and negative
data with hostile images (broken base64, truncated files, random bytes); no request may get a
5xx. With ``--fuzz-budget SECONDS`` (``FUZZ_BUDGET_S``; ``.ci/run`` sets it) of at least
``COVERAGE_MIN_BUDGET_S`` the second run also takes the coverage phase (every boundary the
schema states: minutes on 2 cores, as it draws the 3,072-value pixel arrays at each bound) and
then fuzzes until the budget is spent; without one it fuzzes the fixed number of examples.

The seed changes every day, so that the search goes on over time, and is printed: rerun a
failure with ``FUZZ_SEED=<seed>``. The inference endpoints get at least 50 examples each.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HOOKS = "tests.schemathesis_hooks"
INFERENCE_EXAMPLES = 50
OTHER_EXAMPLES = 12
COVERAGE_MIN_BUDGET_S = 300
# What schemathesis expects for a schema-violating request, and 413 (an array over maxItems)
NEGATIVE_DATA_STATUSES = [
    "400",
    "401",
    "403",
    "404",
    "405",
    "406",
    "409",
    "413",
    "415",
    "422",
    "428",
    "429",
]


def fuzz_seed() -> int:
    return int(os.environ.get("FUZZ_SEED") or datetime.date.today().strftime("%Y%m%d"))


def _schemathesis(
    server, tmp_path, *, mode: str, checks: str, phases: str, images: str, budget: float | None
) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        pytest.fail("schemathesis is a test dependency (pip install -e '.[dev]')")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
[generation]
allow-x00 = false
max-examples = {OTHER_EXAMPLES}

[[operations]]
include-method = "POST"
generation.max-examples = {INFERENCE_EXAMPLES}

# More images than the limit is 413 (too_many_files), as the documents say, not 400/422
[checks.negative_data_rejection]
expected-statuses = {NEGATIVE_DATA_STATUSES}
"""
    )
    seed = fuzz_seed()
    print(f"schemathesis {mode} {phases}, seed {seed} (rerun: FUZZ_SEED={seed})")
    argv = [str(cli), "--config-file", str(config), "run", f"{server.base}/openapi.json"]
    argv += ["--checks", checks, "--mode", mode, "--phases", phases, "--seed", str(seed)]
    argv += ["--no-color"] + (["--max-time", str(int(budget))] if budget else [])
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=(budget or 0) + 900,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": HOOKS,
            "FUZZ_IMAGES": images,
            "PYTHONPATH": str(ROOT),
        },
    )


def _tested(proc: subprocess.CompletedProcess) -> int:
    lines = [line for line in proc.stdout.splitlines() if "Tested:" in line]
    return int(lines[0].split(":")[1].strip()) if lines else 0


def _generated(proc: subprocess.CompletedProcess) -> int:
    lines = [line for line in proc.stdout.splitlines() if " generated" in line]
    return int(lines[-1].split()[0]) if lines else 0


def test_every_check_passes(server, tmp_path):
    """All of schemathesis's checks (status codes, content types, headers and bodies against
    the document, schema-valid requests accepted, schema-violating ones refused, ...) in the
    coverage, fuzzing and stateful phases, with real images where the schema marks one."""
    proc = _schemathesis(
        server,
        tmp_path,
        mode="all",
        checks="all",
        phases="coverage,fuzzing,stateful",
        images="valid",
        budget=None,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert _tested(proc) >= 20, proc.stdout[-2000:]
    assert _generated(proc) >= 5 * INFERENCE_EXAMPLES, proc.stdout[-2000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in proc.stdout, proc.stdout[-2000:]


def test_no_request_gets_a_server_error(server, tmp_path, request):
    budget = request.config.getoption("--fuzz-budget") or None
    coverage = budget is not None and budget >= COVERAGE_MIN_BUDGET_S
    proc = _schemathesis(
        server,
        tmp_path,
        mode="all",
        checks="not_a_server_error",
        phases="coverage,fuzzing" if coverage else "fuzzing",
        images="hostile",
        budget=budget,
    )
    print(proc.stdout[-1500:])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert _tested(proc) >= 20, proc.stdout[-2000:]
    assert _generated(proc) >= 5 * INFERENCE_EXAMPLES, proc.stdout[-2000:]
    if coverage:
        assert "✅ Coverage" in proc.stdout and "✅ Fuzzing" in proc.stdout, proc.stdout[-2000:]
