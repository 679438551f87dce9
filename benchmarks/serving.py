"""Serving benchmark: the bare SavedModel in-process vs the running server, on one machine.

    python benchmarks/serving.py [--model-dir models/cifar10-resnet50] [--data CIFAR_DIR]

(a) the SavedModel called in-process (the server's own loader) at batch 1 and at several batch
sizes; (b) the real server (``python -m app``, a subprocess on a loopback port) under 1 and 32
concurrent clients that upload real PNGs over keep-alive HTTP/1.1 connections. The load
generator is a minimal asyncio client with pre-built requests so that it takes as little of
the machine's CPU as possible. Prints a Markdown table and checks the targets:

* throughput at 32 clients >= 0.9 x the bare model's best-batch throughput
* p50 latency at 1 client <= the bare batch-1 latency + 5 ms
* zero errors
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.model import load_served_model  # noqa: E402


def bare_model(model_dir: Path, batch_sizes: list[int], seconds: float) -> dict:
    model = load_served_model(model_dir)
    h, w = model.input_size
    rng = np.random.default_rng(0)
    out = {"throughput": {}}
    for b in batch_sizes:
        x = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
        for _ in range(3):
            model.predict(x)
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 5:
            t = time.perf_counter()
            model.predict(x)
            times.append(time.perf_counter() - t)
        out["throughput"][b] = b / float(np.median(times))
        if b == 1:
            out["batch1_p50_ms"] = 1000 * float(np.median(times))
    out["best_batch"] = max(out["throughput"], key=out["throughput"].get)
    out["best_throughput"] = out["throughput"][out["best_batch"]]
    return out


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
    boundary = b"benchboundary"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n"
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def one_client(
    port: int, requests: list[bytes], deadline: float, latencies: list, errors: list, offset: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < deadline:
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
            latencies.append(time.perf_counter() - t)
            if b" 200 " not in status_line:
                errors.append(status_line.decode().strip())
    finally:
        writer.close()


async def load(
    port: int, requests: list[bytes], clients: int, seconds: float, warmup: float
) -> dict:
    for phase_seconds in (warmup, seconds):  # the warm-up's numbers are discarded
        latencies, errors = [], []
        start = time.perf_counter()
        deadline = start + phase_seconds
        await asyncio.gather(
            *(
                one_client(port, requests, deadline, latencies, errors, k * 7)
                for k in range(clients)
            )
        )
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "throughput": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "error_samples": errors[:3],
    }


def batching_stats(port: int) -> dict:
    """Model calls, mean images per call and model-busy seconds, from the server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (
            "inference_batch_size_count",
            "inference_batch_size_sum",
            "inference_duration_seconds_sum",
        ):
            values[name] = float(value)
    return values


def batching_delta(before: dict, after: dict, seconds: float) -> dict:
    calls = after["inference_batch_size_count"] - before["inference_batch_size_count"]
    images = after["inference_batch_size_sum"] - before["inference_batch_size_sum"]
    busy = after["inference_duration_seconds_sum"] - before["inference_duration_seconds_sum"]
    return {
        "model_calls": int(calls),
        "mean_batch": images / calls if calls else 0.0,
        "model_busy_share": busy / seconds,
    }


def rss_mib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument(
        "--data", help="CIFAR-10 folder: upload its first test images (default: samples/)"
    )
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=15.0, help="per load measurement")
    ap.add_argument("--bare-seconds", type=float, default=5.0, help="per bare batch size")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    bare = bare_model(
        args.model_dir, [int(b) for b in args.batch_sizes.split(",")], args.bare_seconds
    )
    payloads = png_payloads(args.data, args.images)
    port = free_port()
    env = {**os.environ, "CIFAR10_LOG_LEVEL": "warning"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-dir",
            str(args.model_dir),
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        import urllib.request

        for _ in range(600):
            try:
                if (
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/health/ready", timeout=2
                    ).status
                    == 200
                ):
                    break
            except OSError:
                time.sleep(0.5)
        requests = [build_request(port, p) for p in payloads]
        runs = []
        for clients in (1, 32):
            before = batching_stats(port)
            run = asyncio.run(load(port, requests, clients, args.seconds, warmup=3.0))
            # The counters include the 3 s warm-up: the shares are over warm-up + measurement.
            run.update(batching_delta(before, batching_stats(port), args.seconds + 3.0))
            runs.append(run)
        memory = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    one, many = runs
    checks = {
        "throughput_32_clients >= 0.9 x bare best": many["throughput"]
        >= 0.9 * bare["best_throughput"],
        "p50_1_client <= bare batch-1 + 5 ms": one["p50_ms"] <= bare["batch1_p50_ms"] + 5,
        "zero errors": one["errors"] == 0 and many["errors"] == 0,
    }
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores; model: {args.model_dir}")
    print(
        "\n| measurement | images/s | p50 ms | p95 ms | p99 ms | errors "
        "| mean batch | model busy |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b, t in bare["throughput"].items():
        p50 = f"{bare['batch1_p50_ms']:.1f}" if b == 1 else ""
        print(f"| bare SavedModel, batch {b} | {t:.1f} | {p50} | | | | | |")
    for r in runs:
        print(
            f"| server, {r['clients']} client(s) | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['mean_batch']:.1f} "
            f"| {r['model_busy_share']:.0%} |"
        )
    print(
        f"\nserver RSS at the end: {memory.get('VmRSS', 0):.0f} MiB "
        f"(peak {memory.get('VmHWM', 0):.0f} MiB)"
    )
    print(
        f"server/bare throughput: {many['throughput'] / bare['best_throughput']:.2f}; "
        f"p50 overhead at 1 client: {one['p50_ms'] - bare['batch1_p50_ms']:+.1f} ms"
    )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"bare": bare, "server": runs, "rss_mib": memory, "checks": checks, "cpu": cpu},
                indent=2,
            )
        )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
