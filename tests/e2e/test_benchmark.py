"""The serving benchmark runs end to end (on the tiny model, in seconds) and reports what the
README's tables are made of. Its speed numbers are not checked here: they are for the real model
on a quiet machine, not a test's. What is checked are the invariants the script could break:
counts, bounds, which measurement belongs to which variant, and that independent counts agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_serving_benchmark_compares_runtimes_and_reports_every_target(tiny_model_root, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/serving.py", "--model-dir", str(tiny_model_root)]
        + ["--variants", "tensorflow:f32,openvino:f32", "--images", "8"]
        + ["--batch-sizes", "1,4", "--rounds", "2", "--seconds", "0.6", "--bare-seconds", "0.2"]
        + ["--profile", str(tmp_path / "profile"), "--json", str(out), "--wide", "8:4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # 0: all targets met, 1: some missed (a tiny model makes the server's own work dominate)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    variants = {"tensorflow:f32", "openvino:f32"}
    assert result["reference"] == "tensorflow:f32"
    assert set(result["summary"]) == set(result["sweeps"]) == set(result["rounds"]) == variants
    assert result["checks"]["zero errors"] is True
    assert "bare openvino:f32 >= 1.15x tensorflow:f32" in result["checks"]
    assert "openvino:f32: server CPU outside the model <= 0.25 ms/request" in result["checks"]
    assert "openvino:f32: 1-client p50 <= bare batch 1 + 1.0 ms" in result["checks"]
    assert result["load"].startswith("wrk" if shutil.which("wrk") else "python")
    assert "avx2" in result["machine"]["flags"] or result["machine"]["flags"] == []
    cap = result["batch_cap"]
    for variant in variants:
        assert [r["batch"] for r in result["sweeps"][variant]] == [1, 4]
        assert len(result["rounds"][variant]) == 2
        for r in result["rounds"][variant]:
            many, one = r["server_32"], r["server_1"]
            assert many["requests"] > 0 and one["requests"] > 0
            assert many["errors"] == one["errors"] == 0
            assert r["bare_best"]["batch"] in (1, 4) and r["bare_cap"]["batch"] == cap
            assert 1 <= many["mean_batch"] <= cap
            assert many["model_calls"] <= many["requests"] + 32  # a call serves >= 1 request
            assert 0 < many["model_busy_share"] <= 1.05  # calls that straddle the window's edges
            # the whole server process spends at least what its Python threads do, and they at
            # least what the event loop does
            assert many["server_cpu_ms_per_request"] >= many["outside_model_cpu_ms_per_request"]
            assert many["outside_model_cpu_ms_per_request"] >= many["loop_cpu_ms_per_request"] > 0
            wide = r["server_wide"]
            assert wide["clients"] == 8 and wide["requests"] > 0 and wide["errors"] == 0
            assert 1 <= wide["mean_batch"] <= 4
            assert r["wide_ratio"] == pytest.approx(
                wide["throughput"] / r["bare_best"]["throughput"]
            )
            assert r["bare_mean"]["batch"] == max(1, round(many["mean_batch"]))
            # answers counted by the clients vs images counted by the server, two sources
            f = r["factors"]
            product = f["batching"] * f["sharing"] * f["busy"]
            assert product == pytest.approx(r["ratio"], rel=0.25)
        assert result["rss_mib"][variant]["VmRSS"] > 0
    assert (tmp_path / "profile" / "event_loop_top.txt").read_text().strip()
    assert "Medians of 2 rounds" in proc.stdout and "event loop, own time" in proc.stdout


def test_version_speed_times_every_version_of_every_variant(tiny_model_root, tmp_path):
    models = tmp_path / "tiny"
    for version in ("1", "2"):
        shutil.copytree(tiny_model_root / "1", models / version)
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/version_speed.py", "--model-dir", str(models)]
        + ["--versions", "1,2", "--variants", "tensorflow:f32,openvino:f32"]
        + ["--batches", "4,1", "--rounds", "2", "--seconds", "0.1", "--json", str(out)]
        + ["--write-card"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("machine: ")
    rows = json.loads(out.read_text())["rows"]
    keys = {(r["runtime"], r["precision"], r["batch"], r["version"]) for r in rows}
    assert len(rows) == len(keys) == 8  # 2 variants x 2 batches x 2 versions
    for row in rows:
        assert row["images_per_s"] > 0
        if row["version"] == 1:  # the baseline against itself, round by round
            assert row["ratio_to_first"] == 1.0
    assert "| openvino | f32 | 1 |" in proc.stdout
    recorded = json.loads((models / "2" / "model_card.json").read_text())["speed_against_previous"]
    assert recorded["rows"] == rows and recorded["versions"] == [1, 2]
    assert "speed_against_previous" not in json.loads(
        (models / "1" / "model_card.json").read_text()
    )


def test_middleware_cost_measures_each_middleware_alone_and_all_of_them():
    """Every app answers 200 (the script exits otherwise), each middleware alone and all of
    them are reported, and all of them together cost more than none."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import middleware_cost
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    report = middleware_cost.main(["--requests", "200", "--rounds", "3"])
    assert set(report) == {*middleware_cost.NAMES, "all"}
    assert report["bare"]["over_bare_us"] == 0
    assert all(r["median_us"] > 0 and r["lowest_us"] <= r["median_us"] for r in report.values())
    assert report["all"]["median_us"] > report["bare"]["median_us"]
