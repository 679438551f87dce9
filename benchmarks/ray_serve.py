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

``--serve-batch`` deploys a second application beside it, at ``/serve-batch``: the same replica
with Ray's ``@serve.batch`` in place of the service's batcher
(``benchmarks/ray_serve_batch.py``), measured in the same interleaved rounds (the node then
declares twice the CPUs, so that both replicas get every CPU as the plain server has them).
``--worker-node`` then measures memory per node: a second node joins, the application is
scaled to a replica on each, and the processes that the second node brought are summed (PSS,
and RSS: what the node would need on a machine of its own lies between the two).

    .venv/bin/python benchmarks/ray_serve.py --data /var/tmp/cifar10-data/cifar-10-batches-py \
        --serve-batch --worker-node
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


def wrk(port: int, requests_dir: Path, clients: int, seconds: int, path: str) -> dict:
    """``clients`` connections posting the prepared requests for ``seconds``: requests/s
    counts only successful answers (an error status answers fast and would flatter a target),
    ``requests`` every answer, ``errors`` wrk's count of failed connections, reads, writes,
    timeouts and error statuses."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(WRK_SCRIPT)]
        + [f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_REQUESTS_DIR": str(requests_dir), "WRK_PATH": path},
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {(done.stdout + done.stderr)[-500:]}")
    out = done.stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    summary = json.loads(lines[-1])
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "throughput": (summary["requests"] - summary["status"]) / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "errors": errors,
        "requests": summary["requests"],
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


ENV = {
    **os.environ,
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "app.ray_proxy:middlewares",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def start_ray(
    model_dir: Path,
    variant: str,
    temp_dir: str,
    cpus: int,
    gcs: int,
    serve_batch: float | None,
) -> tuple[int, int, dict]:
    """A one-node Ray cluster (GCS on port ``gcs``) serving the config's application (and the
    ``@serve.batch`` one at ``/serve-batch``), access logs off (the plain server runs without
    them too, waiting ``serve_batch`` ms for company): its HTTP and dashboard ports, and the
    config deployed."""
    dashboard, http = free_port(), free_port()
    env = ENV
    node_cpus = cpus * (1 if serve_batch is None else 2)
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1"]
        + ["--port", str(gcs), "--num-cpus", str(node_cpus), "--dashboard-host", "127.0.0.1"]
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
    if serve_batch is not None:
        batched = {
            **application,
            "name": "cifar10_serve_batch",
            "route_prefix": "/serve-batch",
            "import_path": "benchmarks.ray_serve_batch:build",
            "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}},
            "args": {**application["args"], "max_batch_wait_ms": serve_batch},
        }
        config["applications"].append(yaml.safe_load(yaml.safe_dump(batched)))  # (a deep copy)
    serve_deploy(config, temp_dir, dashboard)
    return http, dashboard, config


def serve_deploy(config: dict, temp_dir: str, dashboard: int) -> None:
    path = Path(temp_dir) / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(BIN / "serve"), "deploy", str(path), "--address", f"http://127.0.0.1:{dashboard}"],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
    )


def running_replicas(dashboard: int, application: str = "cifar10") -> int:
    out = subprocess.run(
        [str(BIN / "serve"), "status", "--address", f"http://127.0.0.1:{dashboard}"],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    app = (yaml.safe_load(out).get("applications") or {}).get(application) or {}
    deployment = (app.get("deployments") or {}).get("Classifier") or {}
    return (deployment.get("replica_states") or {}).get("RUNNING", 0)


def mean_batch(port: int, prefix: str) -> float | None:
    """Images per model call so far, from the target's ``/metrics``."""
    text = httpx.get(f"http://127.0.0.1:{port}{prefix}/metrics", timeout=10).text
    values = dict(
        line.split(" ", 1) for line in text.splitlines() if line.startswith("inference_batch_size_")
    )
    calls = float(values.get("inference_batch_size_count", 0))
    return float(values["inference_batch_size_sum"]) / calls if calls else None


def worker_node_memory(
    config: dict, temp_dir: str, gcs: int, dashboard: int, cpus: int, requests_dir: Path
) -> dict:
    """A second node joins and the application is scaled to two replicas, one per node
    (``max_replicas_per_node: 1``); after a load through the new node's proxy (which keeps
    its requests on its own node's replica), the processes that appeared meanwhile, less any
    under the head's raylet, are the second node's: their PSS and RSS summed, in MiB."""
    before = {p.pid for p in cluster_processes(temp_dir)}
    worker_port = free_port()
    subprocess.run(
        [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs}", "--node-ip-address"]
        + ["127.0.0.1", "--num-cpus", str(cpus), "--disable-usage-stats"],
        cwd=ROOT,
        env={**ENV, "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(worker_port)},
        check=True,
        capture_output=True,
    )
    deployment = config["applications"][0]["deployments"][0]
    deployment["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    serve_deploy(config, temp_dir, dashboard)
    deadline = time.monotonic() + 300
    while running_replicas(dashboard) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the second replica never started on the second node")
        time.sleep(2)
    wait_ready(f"http://127.0.0.1:{worker_port}")
    load = wrk(worker_port, requests_dir, 32, 6, "/predict")
    head = {p.pid for p in _head_raylet_tree(before)}
    new = [p for p in cluster_processes(temp_dir) if p.pid not in before and p.pid not in head]
    return {
        "pss": _sum_mib(new, "pss"),
        "rss": _sum_mib(new, "rss"),
        "processes": len(new),
        "after_requests_per_s": load["throughput"],
    }


def _head_raylet_tree(head_pids: set[int]) -> list[psutil.Process]:
    """The head node's raylet (one of ``head_pids``) and everything under it now (the
    head's new workers)."""
    out = []
    for pid in head_pids:
        try:
            p = psutil.Process(pid)
            if "raylet" in p.name():
                out += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    return out


def cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of the cluster: those whose command line names its temp folder, and
    everything they started."""
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in a for a in p.info["cmdline"] or ())
    ]
    return list({p.pid: p for r in roots for p in [r, *r.children(recursive=True)]}.values())


def _sum_mib(procs: list[psutil.Process], field: str) -> float:
    total = 0
    for p in procs:
        try:
            total += getattr(p.memory_full_info(), field)
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
    ap.add_argument("--serve-batch", action="store_true", help="also Ray's @serve.batch")
    ap.add_argument(
        "--serve-batch-wait-ms",
        type=float,
        default=0.0,
        help="@serve.batch's wait for company (the batcher's default: 0; Ray's: 10)",
    )
    ap.add_argument("--worker-node", action="store_true", help="then memory per node")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    temp_dir = tempfile.mkdtemp(prefix="raybench-", dir="/tmp")
    requests_dir = write_wrk_requests(
        Path(temp_dir) / "requests", png_payloads(args.data, args.images), raw=False
    )
    server, port = start_server(args.model_dir, args.variant)
    gcs = free_port()
    try:
        ray_port, dashboard, config = start_ray(
            args.model_dir.resolve(),
            args.variant,
            temp_dir,
            cpus,
            gcs,
            args.serve_batch_wait_ms if args.serve_batch else None,
        )
        targets = {"server": (port, ""), "ray_serve": (ray_port, "")}
        if args.serve_batch:
            targets["ray_serve_batch"] = (ray_port, "/serve-batch")
        for target_port, prefix in targets.values():
            wait_ready(f"http://127.0.0.1:{target_port}{prefix}")
        rounds: dict = {t: {c: [] for c in args.clients.split(",")} for t in targets}
        order = list(targets)
        for _ in range(args.rounds):  # interleaved: the machine's drift hits all alike
            for clients in args.clients.split(","):
                for target in order:
                    target_port, prefix = targets[target]
                    path = f"{prefix}/predict"
                    result = wrk(target_port, requests_dir, int(clients), args.seconds, path)
                    rounds[target][clients].append(result)
                    time.sleep(2)  # what the last run left queued is done before the next
            order = order[1:] + order[:1]  # each target follows each other in turn
        report = {
            "cpu": cpu_report(),
            "variant": args.variant,
            "serve_batch_wait_ms": args.serve_batch_wait_ms if args.serve_batch else None,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "memory_mib": {
                "server_pss": psutil.Process(server.pid).memory_full_info().pss / 2**20,
                "ray_node_pss": _sum_mib(cluster_processes(temp_dir), "pss"),
                "replicas_on_that_node": len(config["applications"]),
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
        report["all_answered_200"] = all(
            r["errors"] == 0 for t in rounds.values() for rs in t.values() for r in rs
        )
        report["mean_batch"] = {  # from each target's /metrics: model calls and their images
            target: mean_batch(target_port, prefix)
            for target, (target_port, prefix) in targets.items()
        }
        server_medians = report["medians"]["server"]
        report["over_server"] = {
            target: {
                clients: {
                    "throughput": m["throughput"] / server_medians[clients]["throughput"],
                    "p50": m["p50_ms"] / server_medians[clients]["p50_ms"],
                }
                for clients, m in report["medians"][target].items()
            }
            for target in targets
            if target != "server"
        }
        if args.worker_node:
            report["memory_mib"]["worker_node"] = worker_node_memory(
                config, temp_dir, gcs, dashboard, cpus, requests_dir
            )
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
