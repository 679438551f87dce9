"""Server cost of two (or more) versions of this code, side by side on one machine.

    git worktree add /tmp/before <commit>
    python benchmarks/compare_revisions.py --trees /tmp/before,. --variant openvino:bf16

Starts one server per source tree (``python -m app`` run from that tree, on the same model
folder and variant; with ``--streams 1,2``, one per tree and streams setting), then
interleaves rounds: each tree's server under ``wrk`` at ``--clients``
connections (``serving.py``'s ``wrk_load``), the bare model at that server's mean batch, and the
server at 1 connection against the bare batch-1 latency. Prints every round and the medians:
served throughput, the ratio to the bare model at the server's mean batch, event-loop and
outside-model CPU per request, and the 1-connection p50 over bare batch 1. The CPU is printed
first; compare only within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "deploy"))
sys.path.insert(0, str(ROOT))

import serving  # noqa: E402
from local_server import http_ready, wait_until_ready  # noqa: E402

from app.cpu import cpu_report  # noqa: E402
from app.model import load_served_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", required=True, help="comma-separated source trees")
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--variant", default="openvino:bf16")
    ap.add_argument("--data", help="CIFAR-10 folder: upload its first test images")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--cap", type=int, default=16, help="CIFAR10_MAX_BATCH_SIZE of the servers")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--raw", action="store_true", help="raw PNG bodies instead of multipart")
    ap.add_argument(
        "--streams", default="1", help="CIFAR10_INFERENCE_STREAMS of the servers, comma-separated"
    )
    args = ap.parse_args()
    hw = cpu_report()
    print(
        f"machine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}"
    )
    trees = [
        (Path(t).resolve(), int(n)) for t in args.trees.split(",") for n in args.streams.split(",")
    ]
    servers = {
        (t, n): serving.start_server(args.model_dir, args.variant, args.cap, tree=t, streams=n)
        for t, n in trees
    }
    try:
        for server, port in servers.values():
            wait_until_ready(server, http_ready(f"http://127.0.0.1:{port}/health/ready"))
            serving.python_threads(server.pid)
        payloads = serving.png_payloads(args.data, 256)
        requests = serving.write_wrk_requests(Path(tempfile.mkdtemp()), payloads, raw=args.raw)
        runtime, precision = args.variant.split(":")
        models = {
            n: load_served_model(args.model_dir, None, runtime, precision, n)
            for n in {n for _, n in trees}
        }
        rows: dict[tuple[Path, int], list[dict]] = {t: [] for t in trees}
        for _ in range(args.rounds):
            for tree, (server, port) in servers.items():
                model = models[tree[1]]
                many = serving.wrk_load(port, server.pid, requests, args.clients, 5.0)
                mean = max(1, round(many["mean_batch"]))
                bare = serving.bare_throughput(model, mean, 2.0)
                bare_1 = serving.bare_throughput(model, 1, 1.5)
                one = serving.wrk_load(port, server.pid, requests, 1, 3.0)
                row = {
                    "served_req_s": many["throughput"],
                    "mean_batch": many["mean_batch"],
                    "ratio_at_mean_batch": many["throughput"] / bare["throughput"],
                    "loop_cpu_ms": many["loop_cpu_ms_per_request"],
                    "outside_model_cpu_ms": many["outside_model_cpu_ms_per_request"],
                    "p50_1_over_bare_ms": one["p50_ms"] - bare_1["p50_ms"],
                    "errors": many["errors"] + one["errors"],
                }
                rows[tree].append(row)
                print(*name(tree), {k: round(v, 3) for k, v in row.items()}, flush=True)
        print(f"\nmedians of {args.rounds} rounds, {args.variant}, {args.clients} connections:")
        for tree in trees:
            med = {k: round(float(np.median([r[k] for r in rows[tree]])), 3) for k in rows[tree][0]}
            print(*name(tree), med)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=60)


def name(tree: tuple[Path, int]) -> tuple[str, str]:
    return str(tree[0]), f"streams={tree[1]}"


if __name__ == "__main__":
    main()
