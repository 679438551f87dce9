"""The serving benchmark runs end to end (on the tiny model, in seconds) and reports what the
README's table is made of. Its speed numbers are not checked here: they are for the real model
on a quiet machine, not a test's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import ROOT


def test_serving_benchmark_reports_every_target_and_the_gap_factors(tiny_model_root, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/serving.py", "--model-dir", str(tiny_model_root)]
        + ["--images", "8", "--batch-sizes", "1,4", "--rounds", "2"]
        + ["--seconds", "0.5", "--bare-seconds", "0.2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 0: all targets met, 1: some missed (a tiny model makes the server's own work dominate)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["checks"]) == {
        "throughput_32_clients >= 0.9 x bare best",
        "p50_1_client <= bare batch-1 + 5 ms",
        "zero errors",
    }
    assert result["checks"]["zero errors"] is True
    assert [r["batch"] for r in result["sweep"]] == [1, 4]
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        many, one = r["server_32"], r["server_1"]
        assert many["requests"] > 0 and one["requests"] > 0
        assert many["errors"] == one["errors"] == 0
        assert 1 <= many["mean_batch"] <= result["batch_cap"]
        assert 0 < many["model_busy_share"] <= 1.05  # calls that straddle the window's edges
        assert r["ratio"] == many["throughput"] / r["bare_best"]["throughput"]
        f = r["factors"]
        assert f["batching"] == r["bare_cap"]["throughput"] / r["bare_best"]["throughput"]
        assert f["sharing"] > 0 and f["busy"] == many["model_busy_share"]
    assert result["rss_mib"]["VmRSS"] > 0
    assert "median ratio" in proc.stdout and "median factors" in proc.stdout
