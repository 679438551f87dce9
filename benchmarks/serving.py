"""Serving benchmark: every runtime variant, bare in-process and behind the real server.

    python benchmarks/serving.py [--model-dir models/cifar10-resnet50] [--data CIFAR_DIR]
        [--variants tensorflow:f32,openvino:f32,openvino:bf16,openvino:int8] [--profile DIR]

For each variant (runtime and precision; by default TensorFlow f32, OpenVINO f32, OpenVINO bf16
where the CPU has AVX512_BF16 or AMX, and OpenVINO int8 where the version has one): (a) the
model loaded in-process by the server's own loader, at several batch sizes, to find its best;
(b) the real server (``python -m app``, a subprocess on a loopback port, one per variant) under
32 and 1 concurrent clients that upload real PNGs over keep-alive HTTP/1.1 connections. The
load generator is a minimal asyncio client with pre-built requests so that it takes as little
of the machine's CPU as possible.

Shared virtual machines drift by 10-30 % within seconds, so after the batch sweeps the
comparison is made in short rounds; each round measures every variant back to back (bare best
batch, bare at the server's batch cap, server at 32 clients, bare batch 1, server at 1 client),
and the targets are checked on medians of per-round ratios. Throughput is images done per
second of wall time on both sides, the server's in steady state (its clients keep uploading
through the whole window, which starts after a warm-up second and ends before they stop).
Each server load also reports the CPU the server's event loop (its main thread) and the whole
server process spent per request, and the share of the machine the load generator took.

Targets (medians of the rounds, against TensorFlow f32 in the same run):

* bare model, best batch: OpenVINO int8 >= 3.5x; bf16 >= 2.2x (CPUs with AVX512_BF16 or AMX);
  OpenVINO f32 >= 1.15x
* served, 32 clients: the default variant's server >= 2.5x TensorFlow f32's server; 1 client:
  its p50 <= 0.5x TensorFlow's
* every server: 32-client throughput >= 0.85x its own bare model at the server's batch cap
  (``sharing x busy``); the ratio to the bare best batch and the batching factor are reported
* zero errors
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "deploy"))

from local_server import free_port, http_ready, multipart_body, wait_until_ready  # noqa: E402
from timing import time_calls  # noqa: E402

from app.config import Settings  # noqa: E402
from app.cpu import cpu_report, has_fast_bf16  # noqa: E402
from app.model import ServedModel, load_served_model, resolve_version_dir  # noqa: E402
from app.runtimes import INT8_DIR, resolve  # noqa: E402


def bare_throughput(model: ServedModel, batch: int, seconds: float) -> dict:
    """Images/s (images done / wall time, as for the server) and p50 call latency. A model
    with several streams is driven as the server drives it: one thread per stream, each
    calling at once; its figure is the sum of the threads'."""
    h, w = model.input_size
    x = np.random.default_rng(batch).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    with ThreadPoolExecutor(model.streams) as pool:
        per_stream = list(
            pool.map(lambda _: time_calls(model.predict, x, seconds), range(model.streams))
        )
    throughput = sum(batch * len(times) / sum(times) for times in per_stream)
    p50 = float(np.median([t for times in per_stream for t in times]))
    return {"batch": batch, "throughput": throughput, "p50_ms": 1000 * p50}


def png_payloads(data: str | None, n: int) -> list[bytes]:
    if data:
        from training.data import load_cifar10

        images = load_cifar10(data).test.x[:n]
    else:
        images = [
            np.asarray(Image.open(p).convert("RGB"))
            for p in sorted((ROOT / "samples").glob("*.png"))
        ]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def build_request(port: int, png: bytes) -> bytes:
    body, content_type = multipart_body("file", "x.png", png)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def one_client(
    port: int, requests: list[bytes], stop: asyncio.Event, done: list, errors: list, offset: int
) -> None:
    """Upload over one keep-alive connection until ``stop``; record (finish time, latency)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while not stop.is_set():
            req = requests[i % len(requests)]
            i += 1
            t = time.perf_counter()
            writer.write(req)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            finished = time.perf_counter()
            done.append((finished, finished - t))
            if b" 200 " not in status_line:
                errors.append(status_line.decode().strip())
    finally:
        writer.close()


async def snapshot(port: int, server_pid: int) -> dict:
    """What the server and this process have done so far: /metrics, event-loop and own CPU."""
    stats = await asyncio.to_thread(batching_stats, port)  # the clients keep running meanwhile
    stats["loop_cpu"], stats["outside_cpu"] = python_thread_cpu_s(server_pid)
    stats["server_cpu"] = process_cpu_s(server_pid)
    stats["own_cpu"] = time.process_time()
    stats["time"] = time.perf_counter()
    return stats


WRK_SCRIPT = ROOT / "benchmarks" / "wrk_upload.lua"


def write_wrk_requests(folder: Path, payloads: list[bytes], raw: bool) -> Path:
    """The request bodies for ``wrk_upload.lua``: multipart uploads, or raw PNG bodies."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, png in enumerate(payloads):
        if raw:
            body, content_type = png, "image/png"
        else:
            body, content_type = multipart_body("file", "x.png", png)
        (folder / f"body_{i}").write_bytes(body)
        (folder / f"type_{i}").write_text(content_type)
    return folder


def wrk_load(
    port: int,
    server_pid: int,
    requests_dir: Path,
    clients: int,
    seconds: float,
    warmup: float = 1.0,
) -> dict:
    """``clients`` keep-alive connections from ``wrk`` (a C load generator, one thread) posting
    the prepared requests back to back; the server's figures are taken in steady state, between
    two snapshots ``warmup`` s after the start and ``seconds`` later, and wrk's latency
    percentiles and errors cover its whole run."""
    total = math.ceil(warmup + seconds + 0.5)  # wrk takes whole seconds
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{clients}", f"-d{total}s", "--timeout", "10s", "-s", str(WRK_SCRIPT)]
        + [f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "WRK_REQUESTS_DIR": str(requests_dir), "WRK_PATH": "/predict"},
    )
    time.sleep(warmup)
    before = asyncio.run(snapshot(port, server_pid))
    before["wrk_cpu"] = process_cpu_s(wrk.pid)
    time.sleep(seconds)
    after = asyncio.run(snapshot(port, server_pid))
    after["wrk_cpu"] = process_cpu_s(wrk.pid)
    out, _ = wrk.communicate(timeout=60)
    lines = [line for line in out.splitlines() if line.startswith('{"requests"')]
    if not lines:
        raise RuntimeError(f"wrk gave no summary:\n{out}")
    summary = json.loads(lines[-1])
    elapsed = after["time"] - before["time"]
    answered = after["answered"] - before["answered"]
    cpu_seconds = elapsed * (os.cpu_count() or 1)
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "clients": clients,
        "requests": int(answered),
        "errors": errors,
        "error_samples": [] if not errors else [summary],
        "throughput": answered / elapsed,
        "p50_ms": summary["p50_us"] / 1000,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        **batching_delta(before, after, elapsed),
        **cpu_per_request(before, after, answered, cpu_seconds),
        "client_cpu_share": (after["wrk_cpu"] - before["wrk_cpu"]) / cpu_seconds,
    }


def cpu_per_request(before: dict, after: dict, requests: float, cpu_seconds: float) -> dict:
    """The server's CPU per request: its event loop, everything outside the model (every Python
    thread but the inference thread), and the whole process (the model's threads included)."""

    def per_request(key: str) -> float:
        return 1000 * (after[key] - before[key]) / requests if requests else float("nan")

    return {
        "loop_cpu_share": (after["loop_cpu"] - before["loop_cpu"]) / cpu_seconds,
        "loop_cpu_ms_per_request": per_request("loop_cpu"),
        "outside_model_cpu_ms_per_request": per_request("outside_cpu"),
        "server_cpu_ms_per_request": per_request("server_cpu"),
    }


async def load(
    port: int,
    server_pid: int,
    requests: list[bytes],
    clients: int,
    seconds: float,
    warmup: float = 1.0,
) -> dict:
    """``clients`` keep-alive connections uploading back to back; measured in steady state.

    The clients run without pause for ``warmup + seconds``; only the last ``seconds`` count
    (responses finished in that window), so neither the ramp-up nor the drain at the end
    (fewer clients than ``clients`` still waiting) is in the numbers. Errors count over the
    whole load.
    """
    done, errors, stop = [], [], asyncio.Event()
    tasks = [
        asyncio.create_task(one_client(port, requests, stop, done, errors, k * 7))
        for k in range(clients)
    ]
    try:
        await asyncio.sleep(warmup)
        before = await snapshot(port, server_pid)
        await asyncio.sleep(seconds)
        after = await snapshot(port, server_pid)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    elapsed = after["time"] - before["time"]
    lat = np.array([d for t, d in done if before["time"] <= t < after["time"]]) * 1000
    cpu_seconds = elapsed * (os.cpu_count() or 1)  # the whole machine's CPU over the window
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "throughput": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "error_samples": errors[:3],
        **batching_delta(before, after, elapsed),
        **cpu_per_request(before, after, len(lat), cpu_seconds),
        "client_cpu_share": (after["own_cpu"] - before["own_cpu"]) / cpu_seconds,
    }


def batching_stats(port: int) -> dict:
    """Model calls, images and model-busy seconds so far, from the server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {"answered": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("http_requests_total{") and 'route="/predict"' in name:
            values["answered"] += float(value)
        if name in (
            "inference_batch_size_count",
            "inference_batch_size_sum",
            "inference_duration_seconds_sum",
        ):
            values[name] = float(value)
    return values


def batching_delta(before: dict, after: dict, seconds: float) -> dict:
    """Server-side batching over ``seconds`` of wall time between two ``batching_stats``.

    ``model_images_per_busy_s`` is the model's own speed inside the server (images per second
    of model calls): against the bare model at the same batch size it shows what sharing the
    CPU with the server's event loop and the load generator costs the model.
    """
    calls = after["inference_batch_size_count"] - before["inference_batch_size_count"]
    images = after["inference_batch_size_sum"] - before["inference_batch_size_sum"]
    busy = after["inference_duration_seconds_sum"] - before["inference_duration_seconds_sum"]
    return {
        "model_calls": int(calls),
        "mean_batch": images / calls if calls else 0.0,
        "model_busy_share": busy / seconds,
        "model_images_per_busy_s": images / busy if busy else 0.0,
    }


def rss_mib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a whole process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_PYTHON_THREADS: dict[int, dict[int, str]] = {}


def python_threads(pid: int) -> dict[int, str]:
    """The server's Python threads, OS thread id -> name (py-spy, once per server): the event
    loop (MainThread), the inference thread, thread-pool workers. The runtime's own compute
    threads are not Python threads."""
    if pid not in _PYTHON_THREADS:
        for _ in range(5):  # py-spy can miss a process that is busy being read (then retry)
            out = subprocess.run(
                [str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", str(pid)]
                + ["--json", "--nonblocking"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if out.returncode == 0 and out.stdout.strip():
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"py-spy cannot read server {pid}: {out.stderr[-500:]}")
        threads = json.loads(out.stdout)
        _PYTHON_THREADS[pid] = {t["os_thread_id"]: t["thread_name"] for t in threads}
    return _PYTHON_THREADS[pid]


def thread_cpu_s(pid: int, tid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:  # a pool thread that ended
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of the event loop (the main thread) and of every Python thread but the
    inference threads (``inference``, ``inference-2``, ...: they run the model), from one
    reading of each thread."""
    names = python_threads(pid)
    cpu = {tid: thread_cpu_s(pid, tid) for tid in names}
    outside = sum(t for tid, t in cpu.items() if not names[tid].startswith("inference"))
    return cpu[pid], outside


def gap_factors(r: dict) -> dict:
    """The 32-client ratio as a product of three measured factors (the product is the ratio up
    to the model call that straddles each edge of the window: the factors count the images the
    model finished, the ratio the answers the clients received):

    * ``batching``: the bare model at the server's batch cap vs at its best batch size (what
      batches no larger than the cap cost),
    * ``sharing``: the model's speed inside the server (images per second of model calls) vs
      the bare model at the cap (what sharing the CPU with the HTTP work and the load generator
      costs it),
    * ``busy``: the share of the window the model was computing.
    """
    many = r["server_32"]
    return {
        "batching": r["bare_cap"]["throughput"] / r["bare_best"]["throughput"],
        "sharing": many["model_images_per_busy_s"] / r["bare_cap"]["throughput"],
        "busy": many["model_busy_share"],
    }


def profile_server(pid: int, port: int, requests: list[bytes], out_dir: Path) -> dict:
    """Sample the server with py-spy through a 32-client load; write the raw stacks and the
    event loop's (main thread's) functions by own time, the top ones printed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "server_32_clients.txt"
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d", "7"]
        + ["-r", "250", "-f", "raw", "-o", str(raw), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    asyncio.run(load(port, pid, requests, 32, 5.0, warmup=0.5))
    spy.wait(timeout=60)
    own, total = {}, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        total += int(count)
        leaf = frames[-1] if len(frames) > 1 else "(idle)"
        own[leaf] = own.get(leaf, 0) + int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    lines = [f"{100 * n / total:5.1f}%  {name}" for name, n in top]
    (out_dir / "event_loop_top.txt").write_text("\n".join(lines) + "\n")
    print(f"\nevent loop, own time by function (py-spy, {total} samples):")
    print("\n".join(lines[:15]))
    return {"samples": total, "top": top}


def default_variants(model_dir: Path) -> list[str]:
    """TensorFlow f32, OpenVINO f32, bf16 where the CPU has it, int8 where the version has it."""
    out = ["tensorflow:f32", "openvino:f32"]
    if has_fast_bf16():
        out.append("openvino:bf16")
    if (resolve_version_dir(model_dir, None) / INT8_DIR / "model.xml").is_file():
        out.append("openvino:int8")
    return out


def default_variant(model_dir: Path) -> str:
    """What ``auto`` serves on this machine (``CIFAR10_RUNTIME``/``PRECISION`` unset)."""
    version = resolve_version_dir(model_dir, None)
    card = json.loads((version / "model_card.json").read_text())
    return ":".join(resolve("auto", "auto", version, card))


def start_server(
    model_dir: Path,
    variant: str,
    batch_cap: int | None = None,
    tree: Path = ROOT,
    streams: int | None = None,
) -> tuple[subprocess.Popen, int]:
    """``python -m app`` serving ``variant``, run from the source ``tree`` (this one unless
    another checkout is compared), with the batch cap and streams set where given (else as
    the environment says)."""
    runtime, precision = variant.split(":")
    port = free_port()
    env = {**os.environ, "CIFAR10_LOG_LEVEL": "warning", "PYTHONPATH": str(tree)}
    if batch_cap is not None:
        env["CIFAR10_MAX_BATCH_SIZE"] = str(batch_cap)
    if streams is not None:
        env["CIFAR10_INFERENCE_STREAMS"] = str(streams)
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
        + ["--model-dir", str(model_dir), "--runtime", runtime, "--precision", precision],
        cwd=tree,
        env=env,
    )
    return server, port


def server_load(v: dict, clients: int, seconds: float, wide: bool = False) -> dict:
    """The variant's server (``wide``: the one with the raised batch cap) under ``clients``
    connections, from wrk or from the Python load generator."""
    server, port = (v["wide_server"], v["wide_port"]) if wide else (v["server"], v["port"])
    if v["load"] == "wrk":
        return wrk_load(port, server.pid, v["wrk_requests"], clients, seconds)
    requests = v["wide_requests"] if wide else v["requests"]
    return asyncio.run(load(port, server.pid, requests, clients, seconds))


def measure_round(v: dict, cap: int, seconds: float, bare_seconds: float) -> dict:
    """One variant, back to back: bare best and cap, server at 32 clients, bare at the server's
    mean batch, bare 1, server 1, and (with ``--wide``) the wide server at its connections."""
    model, best = v["model"], v["best"]
    r = {"bare_best": bare_throughput(model, best, bare_seconds)}
    r["bare_cap"] = bare_throughput(model, cap, bare_seconds) if cap != best else r["bare_best"]
    r["server_32"] = server_load(v, 32, seconds)
    mean = max(1, round(r["server_32"]["mean_batch"]))
    r["bare_mean"] = r["bare_cap"] if mean == cap else bare_throughput(model, mean, bare_seconds)
    r["bare_1"] = bare_throughput(model, 1, bare_seconds)
    r["server_1"] = server_load(v, 1, seconds)
    if "wide_server" in v:
        r["server_wide"] = server_load(v, v["wide_clients"], seconds, wide=True)
        r["wide_ratio"] = r["server_wide"]["throughput"] / r["bare_best"]["throughput"]
    r["ratio"] = r["server_32"]["throughput"] / r["bare_best"]["throughput"]
    r["ratio_at_mean"] = r["server_32"]["throughput"] / r["bare_mean"]["throughput"]
    r["overhead_ms"] = r["server_1"]["p50_ms"] - r["bare_1"]["p50_ms"]
    r["factors"] = gap_factors(r)
    r["ratio_at_cap"] = r["factors"]["sharing"] * r["factors"]["busy"]
    return r


def medians(rounds: list[dict], reference: list[dict]) -> dict:
    """Medians of one variant's per-round figures, and of its speed-ups over the reference's
    figures of the same round."""

    def med(values):
        return float(np.median(list(values)))

    pairs = list(zip(rounds, reference, strict=True))
    return {
        "bare_best": med(r["bare_best"]["throughput"] for r in rounds),
        "server_32": med(r["server_32"]["throughput"] for r in rounds),
        "server_1_p50_ms": med(r["server_1"]["p50_ms"] for r in rounds),
        "bare_speedup": med(
            r["bare_best"]["throughput"] / t["bare_best"]["throughput"] for r, t in pairs
        ),
        "served_speedup": med(
            r["server_32"]["throughput"] / t["server_32"]["throughput"] for r, t in pairs
        ),
        "p50_1_client_vs_reference": med(
            r["server_1"]["p50_ms"] / t["server_1"]["p50_ms"] for r, t in pairs
        ),
        "ratio": med(r["ratio"] for r in rounds),
        "ratio_at_cap": med(r["ratio_at_cap"] for r in rounds),
        "ratio_at_mean": med(r["ratio_at_mean"] for r in rounds),
        "wide_ratio": med(r["wide_ratio"] for r in rounds) if "wide_ratio" in rounds[0] else None,
        "wide_mean_batch": (
            med(r["server_wide"]["mean_batch"] for r in rounds)
            if "server_wide" in rounds[0]
            else None
        ),
        "factors": {k: med(r["factors"][k] for r in rounds) for k in rounds[0]["factors"]},
        "overhead_ms": med(r["overhead_ms"] for r in rounds),
        "mean_batch": med(r["server_32"]["mean_batch"] for r in rounds),
        "loop_cpu_ms_per_request": med(r["server_32"]["loop_cpu_ms_per_request"] for r in rounds),
        "server_cpu_ms_per_request": med(
            r["server_32"]["server_cpu_ms_per_request"] for r in rounds
        ),
        "outside_model_cpu_ms_per_request": med(
            r["server_32"]["outside_model_cpu_ms_per_request"] for r in rounds
        ),
        "client_cpu_share": med(r["server_32"]["client_cpu_share"] for r in rounds),
        "errors": sum(r[k]["errors"] for r in rounds for k in ("server_1", "server_32")),
    }


BARE_TARGETS = {"openvino:int8": 3.5, "openvino:bf16": 2.2, "openvino:f32": 1.15}
RATIO_AT_MEAN = 0.92  # served / bare at the server's own mean batch, 32 clients
WIDE_RATIO = 0.85  # served at many connections, raised cap / bare best batch
OUTSIDE_MODEL_MS = 0.25  # server CPU outside the model per request
LATENCY_OVERHEAD_MS = 1.0  # 1-client p50 over the bare batch-1 p50


def checks_for(summary: dict, default: str, reference: str) -> dict:
    checks = {}
    for variant, target in BARE_TARGETS.items():
        if variant in summary:
            checks[f"bare {variant} >= {target}x {reference}"] = (
                summary[variant]["bare_speedup"] >= target
            )
    if default in summary and default != reference:
        checks[f"served {default} (default) >= 2.5x {reference}, 32 clients"] = (
            summary[default]["served_speedup"] >= 2.5
        )
        checks[f"served {default} (default) 1-client p50 <= 0.5x {reference}"] = (
            summary[default]["p50_1_client_vs_reference"] <= 0.5
        )
    for variant, m in summary.items():
        if not variant.startswith("openvino:"):
            continue
        checks[f"{variant}: server 32 clients >= {RATIO_AT_MEAN}x bare at its mean batch"] = (
            m["ratio_at_mean"] >= RATIO_AT_MEAN
        )
        checks[f"{variant}: server CPU outside the model <= {OUTSIDE_MODEL_MS} ms/request"] = (
            m["outside_model_cpu_ms_per_request"] <= OUTSIDE_MODEL_MS
        )
        checks[f"{variant}: 1-client p50 <= bare batch 1 + {LATENCY_OVERHEAD_MS} ms"] = (
            m["overhead_ms"] <= LATENCY_OVERHEAD_MS
        )
        if m["wide_ratio"] is not None and variant in (default, "openvino:int8"):
            checks[f"{variant}: wide load >= {WIDE_RATIO}x bare best batch"] = (
                m["wide_ratio"] >= WIDE_RATIO
            )
    checks["zero errors"] = all(m["errors"] == 0 for m in summary.values())
    return checks


def print_report(result: dict) -> None:
    cap, reference = result["batch_cap"], result["reference"]
    hw = result["machine"]
    print(
        f"\nmachine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}"
    )
    print(
        f"model: {result['model_dir']}; default variant here: {result['default']}; "
        f"OpenVINO streams: {result.get('streams', 1)} (CIFAR10_INFERENCE_STREAMS)"
    )
    print("\nBare model, in-process, batch sweep (images/s):\n")
    batches = [r["batch"] for r in next(iter(result["sweeps"].values()))]
    print("| variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- " + "| ---: " * len(batches) + "|")
    for variant, sweep in result["sweeps"].items():
        print(f"| {variant} | " + " | ".join(f"{r['throughput']:.1f}" for r in sweep) + " |")
    print(f"\nMedians of {result['rounds_count']} rounds (speed-ups against {reference}):\n")
    wide = result.get("wide")
    wide_head = f"| {wide['clients']} conns, cap {wide['cap']}: / bare best " if wide else ""
    print(
        "| variant | bare best img/s | x | server 32 clients req/s | x | 1-client p50 ms | x "
        f"| 1-client over bare b1 ms | server / bare at its mean batch (cap {cap}) | mean batch "
        f"| server / bare best {wide_head}| loop CPU ms/req | outside-model CPU ms/req "
        "| server CPU ms/req | errors |"
    )
    print("| --- " + "| ---: " * (14 if wide else 13) + "|")
    for variant, m in result["summary"].items():
        wide_cell = f"| {m['wide_ratio']:.2f} (batch {m['wide_mean_batch']:.0f}) " if wide else ""
        print(
            f"| {variant} | {m['bare_best']:.1f} | {m['bare_speedup']:.2f} | {m['server_32']:.1f} "
            f"| {m['served_speedup']:.2f} | {m['server_1_p50_ms']:.1f} "
            f"| {m['p50_1_client_vs_reference']:.2f} | {m['overhead_ms']:.2f} "
            f"| {m['ratio_at_mean']:.2f} | {m['mean_batch']:.1f} | {m['ratio']:.2f} {wide_cell}"
            f"| {m['loop_cpu_ms_per_request']:.2f} | {m['outside_model_cpu_ms_per_request']:.2f} "
            f"| {m['server_cpu_ms_per_request']:.2f} | {m['errors']} |"
        )
    print(
        f"\n(x: the variant's figure over the reference's, per round; load: {result['load']}; "
        "load generator CPU share: "
        + ", ".join(f"{v} {m['client_cpu_share']:.0%}" for v, m in result["summary"].items())
        + ")"
    )
    print(f"\nserver RSS at the end (MiB): {json.dumps(result['rss_mib'])}")
    for name, ok in result["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument(
        "--data", help="CIFAR-10 folder: upload its first test images (default: samples/)"
    )
    ap.add_argument("--variants", help="runtime:precision,... (default: all that apply here)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,8,16,32,64")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved comparison rounds")
    ap.add_argument("--seconds", type=float, default=4.0, help="per server load measurement")
    ap.add_argument("--bare-seconds", type=float, default=2.0, help="per bare measurement")
    ap.add_argument(
        "--profile", type=Path, help="py-spy profile of the default (else the last) server here"
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (C, default where installed) or the asyncio client",
    )
    ap.add_argument(
        "--raw", action="store_true", help="post the PNGs as raw bodies, not multipart forms"
    )
    ap.add_argument(
        "--wide",
        default="128:64",
        help="CONNECTIONS:CAP: a second server per variant with batch cap CAP under CONNECTIONS "
        "connections, where batches can fill ('' to skip)",
    )
    args = ap.parse_args()

    names = args.variants.split(",") if args.variants else default_variants(args.model_dir)
    reference, default = names[0], default_variant(args.model_dir)
    payloads = png_payloads(args.data, args.images)
    # the servers' batch cap and streams (they read the same environment)
    cap, streams = Settings().max_batch_size, Settings().inference_streams
    wide_clients, wide_cap = (int(x) for x in args.wide.split(":")) if args.wide else (0, 0)
    wrk_requests = write_wrk_requests(
        Path(tempfile.mkdtemp(prefix="wrk-requests-")), payloads, raw=args.raw
    )
    variants: dict[str, dict] = {}
    try:
        for name in names:
            server, port = start_server(args.model_dir, name)
            variants[name] = {"server": server, "port": port, "load": args.load}
            variants[name]["wrk_requests"] = wrk_requests
            if args.wide:
                wide, wide_port = start_server(args.model_dir, name, batch_cap=wide_cap)
                variants[name].update(
                    wide_server=wide, wide_port=wide_port, wide_clients=wide_clients
                )
        for name, v in variants.items():
            for key, port_key in (("server", "port"), ("wide_server", "wide_port")):
                if key in v:
                    url = f"http://127.0.0.1:{v[port_key]}/health/ready"
                    wait_until_ready(v[key], http_ready(url))
                    python_threads(v[key].pid)  # read once, before any measurement
            v["requests"] = [build_request(v["port"], p) for p in payloads]
            if args.wide:
                v["wide_requests"] = [build_request(v["wide_port"], p) for p in payloads]
            runtime, precision = name.split(":")
            v["model"] = load_served_model(args.model_dir, None, runtime, precision, streams)
        sweeps = {}
        for name, v in variants.items():
            sweeps[name] = [
                bare_throughput(v["model"], int(b), args.bare_seconds)
                for b in args.batch_sizes.split(",")
            ]
            v["best"] = max(sweeps[name], key=lambda r: r["throughput"])["batch"]
        rounds = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, v in variants.items():
                rounds[name].append(measure_round(v, cap, args.seconds, args.bare_seconds))
        profiled = default if default in variants else names[-1]
        if args.profile:
            v = variants[profiled]
            print(f"\nprofiling the {profiled} server at 32 clients", flush=True)
            profile_server(v["server"].pid, v["port"], v["requests"], args.profile)
        memory = {name: rss_mib(v["server"].pid) for name, v in variants.items()}
    finally:
        for v in variants.values():
            for key in ("server", "wide_server"):
                if key in v:
                    v[key].terminate()
                    v[key].wait(timeout=60)

    summary = {name: medians(rounds[name], rounds[reference]) for name in variants}
    result = {
        "machine": cpu_report(),
        "model_dir": str(args.model_dir),
        "reference": reference,
        "default": default,
        "batch_cap": cap,
        "streams": streams,
        "load": args.load + (" (raw bodies)" if args.raw else " (multipart)"),
        "wide": {"clients": wide_clients, "cap": wide_cap} if args.wide else None,
        "rounds_count": args.rounds,
        "sweeps": sweeps,
        "rounds": rounds,
        "summary": summary,
        "rss_mib": memory,
        "checks": checks_for(summary, default, reference),
    }
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
