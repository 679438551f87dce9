"""This project's server against the same service on Ray Serve, on this machine, in one run:
what Ray's proxy hop and its processes cost (issue 44).

Starts both: ``python -m app`` (as ``make serve`` does) and a one-node Ray cluster with the
application of ``deploy/ray/serve.yaml`` (one replica given every CPU, as the plain server has
them; the same model, runtime and precision); then ``wrk`` uploads the test images to each in
interleaved rounds at each connection count and reports the medians of requests/s, p50 and p99,
and the memory: the plain server's PSS against the sum over every Ray process (GCS, raylet,
dashboard and its agents, Serve's controller and proxy, the replica). Both run side by side
(Ray's idle processes take a little CPU from the plain server's rounds too); access logs are
off on both. Stop a training run
first (SIGSTOP): these figures need the CPU to themselves.

    .venv/bin/python benchmarks/ray_serve.py --data /var/tmp/cifar10-data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cpu import cpu_report  # noqa: E402
from benchmarks.serving import (  # noqa: E402
    WRK_SCRIPT,
    png_payloads,
    start_server,
    write_wrk_requests,
)
from deploy.local_server import free_port  # noqa: E402
from tests.helpers import stop_ray_cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wrk(port: int, requests_dir: Path, clients: int, seconds: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(WRK_SCRIPT)]
        + [f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_REQUESTS_DIR": str(requests_dir), "WRK_PATH": "/predict"},
        check=True,
    ).stdout
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "throughput": summary["requests"] / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "errors": errors,
    }


def wait_ready(base: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{base} never became ready")


def start_ray(model_dir: Path, variant: str, temp_dir: str, cpus: int, gcs: int) -> int:
    """A one-node Ray cluster (GCS on port ``gcs``) serving the config's application, access
    logs off (the plain server runs without them too): its HTTP port."""
    dashboard, http = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "app.ray_proxy:middlewares",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1"]
        + ["--port", str(gcs), "--num-cpus", str(cpus), "--dashboard-host", "127.0.0.1"]
        + ["--dashboard-port", str(dashboard), "--temp-dir", temp_dir, "--disable-usage-stats"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=http)
    config["logging_config"] = {"enable_access_log": False, "log_level": "WARNING"}
    application = config["applications"][0]
    runtime, precision = variant.split(":")
    application["args"].update(model_dir=str(model_dir), runtime=runtime, precision=precision)
    deployment = application["deployments"][0]
    deployment["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    deployment["ray_actor_options"]["num_cpus"] = cpus
    path = Path(temp_dir) / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(BIN / "serve"), "deploy", str(path), "--address", f"http://127.0.0.1:{dashboard}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return http


def ray_pss_mib(temp_dir: str) -> float:
    """Proportional set size of every process of the cluster (those whose command line names
    its temp folder, and everything they started): shared pages counted once in all."""
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in a for a in p.info["cmdline"] or ())
    ]
    procs = {p.pid: p for r in roots for p in [r, *r.children(recursive=True)]}
    total = 0
    for p in procs.values():
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--variant", default="openvino:int8")
    ap.add_argument("--data", help="CIFAR-10 python folder (default: the ten samples)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--clients", default="1,32,128")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    temp_dir = tempfile.mkdtemp(prefix="raybench-", dir="/tmp")
    requests_dir = write_wrk_requests(
        Path(temp_dir) / "requests", png_payloads(args.data, args.images), raw=False
    )
    server, port = start_server(args.model_dir, args.variant)
    gcs = free_port()
    try:
        ray_port = start_ray(args.model_dir.resolve(), args.variant, temp_dir, cpus, gcs)
        wait_ready(f"http://127.0.0.1:{port}")
        wait_ready(f"http://127.0.0.1:{ray_port}")
        targets = {"server": port, "ray_serve": ray_port}
        rounds: dict = {t: {c: [] for c in args.clients.split(",")} for t in targets}
        for _ in range(args.rounds):  # interleaved: the machine's drift hits both alike
            for clients in args.clients.split(","):
                for target, target_port in targets.items():
                    result = wrk(target_port, requests_dir, int(clients), args.seconds)
                    rounds[target][clients].append(result)
        report = {
            "cpu": cpu_report(),
            "variant": args.variant,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "memory_mib": {
                "server_pss": psutil.Process(server.pid).memory_full_info().pss / 2**20,
                "ray_node_pss": ray_pss_mib(temp_dir),
            },
            "medians": {
                target: {
                    clients: {
                        key: statistics.median(r[key] for r in results)
                        for key in ("throughput", "p50_ms", "p99_ms", "errors")
                    }
                    for clients, results in by_clients.items()
                }
                for target, by_clients in rounds.items()
            },
        }
        report["ray_over_server"] = {
            clients: {
                "throughput": report["medians"]["ray_serve"][clients]["throughput"]
                / report["medians"]["server"][clients]["throughput"],
                "p50": report["medians"]["ray_serve"][clients]["p50_ms"]
                / report["medians"]["server"][clients]["p50_ms"],
            }
            for clients in report["medians"]["server"]
        }
        text = json.dumps(_rounded(report), indent=1)
        print(text)
        if args.json:
            args.json.write_text(text)
    finally:
        server.terminate()
        server.wait(timeout=60)
        stop_ray_cluster(temp_dir, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
