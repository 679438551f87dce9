"""Serving benchmark: the bare SavedModel in-process vs the running server, on one machine.

    python benchmarks/serving.py [--model-dir models/cifar10-resnet50] [--data CIFAR_DIR]

(a) the SavedModel called in-process (the server's own loader) at several batch sizes, to find
the best; (b) the real server (``python -m app``, a subprocess on a loopback port) under 1 and
32 concurrent clients that upload real PNGs over keep-alive HTTP/1.1 connections. The load
generator is a minimal asyncio client with pre-built requests so that it takes as little of
the machine's CPU as possible.

Shared virtual machines drift by 10-30 % within seconds, so after the batch sweep the
comparison is made in many short rounds, each measuring the bare model and the server back to
back (bare best batch, bare at the server's batch cap, server at 32 clients, bare batch 1,
server at 1 client); the targets are checked on the median of the per-round ratios and
differences. Throughput is images done per second of wall time on both sides, the server's in
steady state: its clients keep uploading through the whole measured window, which starts after
a warm-up second and ends before they stop. Latency is the median. Each server load also
reports what share of the machine's CPU the server's event loop (its main thread) and the load
generator took (CPU that the model's threads could not use), and each round splits the
32-client ratio into three measured factors (see ``gap_factors``).

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
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "deploy"))

from local_server import free_port, http_ready, multipart_body, wait_until_ready  # noqa: E402
from timing import time_calls  # noqa: E402

from app.config import Settings  # noqa: E402
from app.model import ServedModel, load_served_model  # noqa: E402
from training.provenance import cpu_description  # noqa: E402


def bare_throughput(model: ServedModel, batch: int, seconds: float) -> dict:
    """Images/s (images done / wall time, as for the server) and p50 call latency."""
    h, w = model.input_size
    x = np.random.default_rng(batch).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    times = time_calls(model.predict, x, seconds)
    p50 = float(np.median(times))
    return {"batch": batch, "throughput": batch * len(times) / sum(times), "p50_ms": 1000 * p50}


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
    stats["loop_cpu"] = main_thread_cpu_s(server_pid)
    stats["own_cpu"] = time.process_time()
    stats["time"] = time.perf_counter()
    return stats


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
        "loop_cpu_share": (after["loop_cpu"] - before["loop_cpu"]) / cpu_seconds,
        "client_cpu_share": (after["own_cpu"] - before["own_cpu"]) / cpu_seconds,
    }


def batching_stats(port: int) -> dict:
    """Model calls, images and model-busy seconds so far, from the server's /metrics."""
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


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process's main thread (the server's event loop)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


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


def machine() -> str:
    cpu = cpu_description()
    return f"{cpu['cpu']}, {cpu['cores']} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument(
        "--data", help="CIFAR-10 folder: upload its first test images (default: samples/)"
    )
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,8,16,32,64")
    ap.add_argument("--rounds", type=int, default=10, help="bare/server comparison rounds")
    ap.add_argument("--seconds", type=float, default=4.0, help="per server load measurement")
    ap.add_argument("--bare-seconds", type=float, default=3.0, help="per bare measurement")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    requests_png = png_payloads(args.data, args.images)
    cap = Settings().max_batch_size  # the server's batch cap (it reads the same environment)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
        + ["--model-dir", str(args.model_dir)],
        cwd=ROOT,
        env={**os.environ, "CIFAR10_LOG_LEVEL": "warning"},
    )
    try:
        wait_until_ready(server, http_ready(f"http://127.0.0.1:{port}/health/ready"))
        requests = [build_request(port, p) for p in requests_png]
        model = load_served_model(args.model_dir)  # the server is idle meanwhile
        sweep = [
            bare_throughput(model, int(b), args.bare_seconds) for b in args.batch_sizes.split(",")
        ]
        best = max(sweep, key=lambda r: r["throughput"])["batch"]
        rounds = []
        for _ in range(args.rounds):
            r = {"bare_best": bare_throughput(model, best, args.bare_seconds)}
            r["bare_cap"] = (
                bare_throughput(model, cap, args.bare_seconds) if cap != best else r["bare_best"]
            )
            r["server_32"] = asyncio.run(load(port, server.pid, requests, 32, args.seconds))
            r["bare_1"] = bare_throughput(model, 1, args.bare_seconds)
            r["server_1"] = asyncio.run(load(port, server.pid, requests, 1, args.seconds))
            r["ratio"] = r["server_32"]["throughput"] / r["bare_best"]["throughput"]
            r["overhead_ms"] = r["server_1"]["p50_ms"] - r["bare_1"]["p50_ms"]
            r["factors"] = gap_factors(r)
            rounds.append(r)
        memory = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    ratio = float(np.median([r["ratio"] for r in rounds]))
    overhead = float(np.median([r["overhead_ms"] for r in rounds]))
    errors = sum(r[k]["errors"] for r in rounds for k in ("server_1", "server_32"))
    checks = {
        "throughput_32_clients >= 0.9 x bare best": ratio >= 0.9,
        "p50_1_client <= bare batch-1 + 5 ms": overhead <= 5,
        "zero errors": errors == 0,
    }
    print(f"\nmachine: {machine()}; model: {args.model_dir}")
    print("\nBare SavedModel, in-process (batch sweep):\n")
    print("| batch | images/s | p50 ms per call |")
    print("| ---: | ---: | ---: |")
    for r in sweep:
        print(f"| {r['batch']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} |")
    print(f"\nRounds (bare best batch = {best}; server: 32 clients, then 1 client):\n")
    print(
        "| round | bare best img/s | server 32 req/s | ratio | p50 / p99 ms at 32 "
        "| mean batch | model busy | loop / client CPU | bare b1 p50 ms | server 1-client p50 ms "
        "| overhead ms | errors |"
    )
    print("| ---: " * 12 + "|")
    for i, r in enumerate(rounds, 1):
        many, one = r["server_32"], r["server_1"]
        print(
            f"| {i} | {r['bare_best']['throughput']:.1f} | {many['throughput']:.1f} "
            f"| {r['ratio']:.2f} | {many['p50_ms']:.0f} / {many['p99_ms']:.0f} "
            f"| {many['mean_batch']:.1f} | {many['model_busy_share']:.0%} "
            f"| {many['loop_cpu_share']:.0%} / {many['client_cpu_share']:.0%} "
            f"| {r['bare_1']['p50_ms']:.1f} | {one['p50_ms']:.1f} | {r['overhead_ms']:+.1f} "
            f"| {many['errors'] + one['errors']} |"
        )
    print(
        f"\nWhere the 32-client throughput goes (ratio = batching x sharing x busy; "
        f"batch cap {cap}):\n"
    )
    print(
        f"| round | bare batch {cap} img/s | batching: bare {cap} / bare {best} "
        f"| model in server img/s | sharing: in server / bare {cap} | busy | product | ratio |"
    )
    print("| ---: " * 8 + "|")
    for i, r in enumerate(rounds, 1):
        f = r["factors"]
        print(
            f"| {i} | {r['bare_cap']['throughput']:.1f} | {f['batching']:.2f} "
            f"| {r['server_32']['model_images_per_busy_s']:.1f} | {f['sharing']:.2f} "
            f"| {f['busy']:.0%} | {f['batching'] * f['sharing'] * f['busy']:.2f} "
            f"| {r['ratio']:.2f} |"
        )
    factors = {k: float(np.median([r["factors"][k] for r in rounds])) for k in rounds[0]["factors"]}
    print(
        "\nmedian factors: "
        + ", ".join(f"{k} {v:.2f}" for k, v in factors.items())
        + f" (product {np.prod(list(factors.values())):.2f})"
    )
    print(
        f"\nmedian ratio {ratio:.2f}; median p50 overhead at 1 client {overhead:+.1f} ms; "
        f"server RSS at the end {memory.get('VmRSS', 0):.0f} MiB "
        f"(peak {memory.get('VmHWM', 0):.0f} MiB)"
    )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "sweep": sweep,
                    "rounds": rounds,
                    "median_ratio": ratio,
                    "median_factors": factors,
                    "batch_cap": cap,
                    "median_overhead_ms": overhead,
                    "rss_mib": memory,
                    "checks": checks,
                },
                indent=2,
            )
        )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
