"""``benchmarks/peers.py`` end to end on the tiny model with one peer, LitServe (the cheapest to
install: a few packages beside what the project has), in a venv the script makes: the report's
shape and the invariants it could break. Its figures are for the real model on a quiet machine
(docs/benchmarks.md), not a test's. Needs ``wrk`` and the package registry (CI has both)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # as when run: python benchmarks/peers.py
from benchmarks import peers  # noqa: E402
from benchmarks.ray_serve import wrk  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
def test_peers_benchmark_measures_litserve_beside_the_server(tiny_model_root, tmp_path):
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/peers.py", "--model-dir", str(tiny_model_root)]
        + ["--variant", "openvino:f32", "--peers", "litserve", "--venvs", str(tmp_path / "venvs")]
        + ["--rounds", "2", "--seconds", "1", "--clients", "1,4", "--images", "8"]
        + ["--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["skipped"] == {}, report["skipped"]
    assert set(report["targets"]) == {"server", "litserve"}
    assert "flags" in report["cpu"] and report["variant"] == "openvino:f32"
    assert re.fullmatch(r"[0-9a-f]{40}\+?", report["commit"])  # what was measured
    assert report["packages"] == {"litserve": ["litserve==0.2.19"]}
    server = report["targets"]["server"]
    for name, target in report["targets"].items():
        assert 0 <= target["idle_cpu_per_s"] < 2, name
        assert len(target["labels"]) == 10  # one per sample
        assert target["labels"] == server["labels"], name  # the same model and decoding
        assert target["labels_match_server"] is True
        assert 0 <= target["max_abs_diff"] <= 0.01
        assert set(target["by_connections"]) == set(target["over_server"]) == {"1", "4"}
        for clients, m in target["by_connections"].items():
            assert m["errors"] == 0, (name, clients)
            assert m["throughput"] > 0 and 0 < m["p50_ms"] <= m["p99_ms"]
            assert m["cpu_ms_per_request"] > 0 and m["peak_rss_mib"] >= m["pss_mib"] > 10
            assert m["errors_per_round"] == [0, 0]
            ratio = target["over_server"][clients]
            expected = m["throughput"] / server["by_connections"][clients]["throughput"]
            assert abs(ratio["throughput"] - round(expected, 3)) <= 0.002
    for ratio in server["over_server"].values():
        assert ratio == {"throughput": 1.0, "p50": 1.0, "p99": 1.0}
    table = peers.markdown_table(report).splitlines()
    assert len(table) == 2 + 2 * 2  # the header, then a line per target and connection count
    assert table[4].startswith("| LitServe 0.2.19 | uploads | 1 | ")
    # nothing of the peer left running, or stopped (the script pauses the targets in turn)
    venvs = str(tmp_path / "venvs")
    left = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline", "status"])
        if any(venvs in a for a in p.info["cmdline"] or ())
    ]
    assert left == []
    # the peer ran in the venv the script made, with the peer's pinned package in it
    venv = tmp_path / "venvs" / "litserve"
    assert (venv / "installed.txt").read_text() == "litserve==0.2.19"
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import litserve; print(litserve.__version__)"],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "0.2.19", check.stderr


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
def test_each_protocol_is_answered_alike_by_the_server(server, tiny_model_root, tmp_path):
    """The requests the benchmark sends the Open Inference Protocol peers (base64 JSON, binary
    tensors with their header through ``wrk_upload.lua``'s ``headers_N``) are answered by this
    server with the probabilities of the same uploads, batched or not, and wrk's run of each
    is all 200s."""
    names = peers.class_names(server.port)
    assert len(names) == 10
    uploads = peers.answers_of(server.port, names)
    assert [len(per) for per in uploads] == [4] * len(peers.SAMPLES)
    payloads = [sample.read_bytes() for sample in peers.SAMPLES]
    for protocol in (peers.V2_JSON, peers.V2_BINARY):
        path = peers.inference_path(protocol, tiny_model_root.name)
        answers = peers.answers_of(server.port, names, path, protocol, timeout=30)
        compared = peers.compare(answers, uploads, names)
        assert compared["labels_match_server"], (protocol, compared)
        assert compared["max_abs_diff"] <= peers.PROBABILITY_TOLERANCE
        folder = peers.write_requests(tmp_path / protocol, protocol, payloads)
        extra = (folder / "headers_0").exists()
        assert extra == (protocol == peers.V2_BINARY)  # the header length travels as a header
        result = wrk(server.port, folder, 2, 1, path)
        assert result["requests"] > 0 and result["errors"] == 0, (protocol, result)
    # the same binary body without its header is refused: the header is what wrk sent above
    body, headers = peers.request_of(peers.V2_BINARY, payloads[0])
    del headers["Inference-Header-Content-Length"]
    r = httpx.post(server.base + path, content=body, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    # a status other than 503 or 404 (a target still starting) fails at once, with its words
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^answered 4\d\d: \{"):
        peers.answers_of(server.port, names, path, peers.MULTIPART, timeout=60)
    assert time.monotonic() - started < 10
    with pytest.raises(RuntimeError, match="no answer .* within 3 s: answered 404"):
        peers.answers_of(server.port, names, "/nowhere", peers.MULTIPART, timeout=3)


def test_answers_compared_by_class_and_probability():
    names = [f"c{i}" for i in range(3)]
    reference = [[[0.7, 0.2, 0.1]], [[0.1, 0.1, 0.8]]]
    same = [[[0.7, 0.2, 0.1], [0.7004, 0.1996, 0.1]], [[0.1, 0.1, 0.8]] * 2]
    assert peers.compare(same, reference, names)["labels_match_server"]
    assert peers.compare(same, reference, names)["labels"] == ["c0", "c2"]
    # one answer of the batch swapped with another request's: the class differs
    swapped = [[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.1, 0.1, 0.8]] * 2]
    assert not peers.compare(swapped, reference, names)["labels_match_server"]
    # the same classes, other probabilities (another model, or other decoding)
    flatter = [[[0.5, 0.3, 0.2]], [[0.2, 0.2, 0.6]]]
    result = peers.compare(flatter, reference, names)
    assert not result["labels_match_server"] and result["max_abs_diff"] == pytest.approx(0.2)
    # BentoML's answer to a batchable API is the list of the one answer
    upload = {"label": "c2", "probabilities": {"c0": 0.1, "c1": 0.1, "c2": 0.8}}
    assert peers.probabilities_of(peers.MULTIPART, [upload], names) == [0.1, 0.1, 0.8]
    v2 = {"outputs": [{"name": "probabilities", "data": [0.1, 0.1, 0.8]}]}
    assert peers.probabilities_of(peers.V2_JSON, v2, names) == [0.1, 0.1, 0.8]
    with pytest.raises(ValueError):
        short = {"outputs": [{"name": "probabilities", "data": [1.0]}]}
        peers.probabilities_of(peers.V2_JSON, short, names)


def test_ratios_against_the_server_sent_the_same_requests():
    def run(throughput, errors=0):
        latency = {"p50_ms": 1000 / throughput, "p99_ms": 2000 / throughput}
        return {"throughput": throughput, "errors": errors, **latency}

    def target(protocol, runs, same=True):
        return {"protocol": protocol, "labels_match_server": same, "by_connections": runs}

    report = {
        "targets": {
            "server": target(peers.MULTIPART, {"1": run(100), "32": run(200)}),
            "server (v2-json)": target(peers.V2_JSON, {"1": run(50), "32": run(100)}),
            "litserve": target(peers.MULTIPART, {"1": run(75), "32": run(150, errors=3)}),
            "mlserver": target(peers.V2_JSON, {"1": run(25), "32": run(50)}),
            "other": target(peers.MULTIPART, {"1": run(300), "32": run(300)}, same=False),
        }
    }
    peers.add_ratios(report)
    t = report["targets"]
    assert t["server"]["over_server"]["32"] == {"throughput": 1.0, "p50": 1.0, "p99": 1.0}
    assert t["litserve"]["over_server"] == {
        "1": {"throughput": 0.75, "p50": pytest.approx(4 / 3), "p99": pytest.approx(4 / 3)}
    }  # none at 32: it had errors there
    assert t["mlserver"]["over_server"]["1"]["throughput"] == 0.5  # against server (v2-json)
    assert "over_server" not in t["other"]  # answers differ: reported, not ranked
