"""BentoML's adaptive batching at one connection before and after a burst of 128 (issue 45):
its dispatcher's wait estimate, learned under load, holds each lone request afterwards.

Runs ``benchmarks/peer_apps/bentoml_app.py`` from the venv ``benchmarks/peers.py`` makes, then
6 s runs of wrk in this order: 1, 1, 128, 1, 1, 1, 1 connections; prints each run's requests/s
(successful answers) and p50. Stop a training run first (SIGSTOP).

    .venv/bin/python benchmarks/bentoml_after_load.py --data CIFAR10_PYTHON_FOLDER
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cpu import cpu_report  # noqa: E402
from benchmarks import peers  # noqa: E402
from benchmarks.ray_serve import wrk  # noqa: E402
from benchmarks.serving import png_payloads  # noqa: E402

ORDER = (1, 1, 128, 1, 1, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=peers.ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--variant", default="openvino:int8")
    ap.add_argument("--venvs", type=Path, default=Path("/var/tmp/cifar10-peers"))
    ap.add_argument("--data", help="CIFAR-10 python folder (default: the ten samples)")
    args = ap.parse_args()
    print(cpu_report())
    peer = peers.PEERS["bentoml"]
    python, reason = peers.ensure_venv(peer, args.venvs)
    if python is None:
        sys.exit(f"bentoml did not install: {reason}")
    with tempfile.TemporaryDirectory(prefix="bentoml-after-load-") as temp:
        requests = peers.write_requests(
            Path(temp) / "requests", peers.MULTIPART, png_payloads(args.data, 256)
        )
        log = Path(temp) / "bentoml" / "output.log"
        log.parent.mkdir()
        model_dir = args.model_dir.resolve()
        proc, port = peers.start_peer(peer, python, model_dir, args.variant, 16, log)
        try:
            names = ["airplane", "automobile", "bird", "cat", "deer"]
            names += ["dog", "frog", "horse", "ship", "truck"]
            peers.answers_of(port, names, proc=proc, log=log, repeat=1)
            for clients in ORDER:
                r = wrk(port, requests, clients, 6, "/predict")
                print(
                    f"{clients:4d} connections: {r['throughput']:7.1f} req/s, "
                    f"p50 {r['p50_ms']:7.1f} ms, errors {r['errors']}",
                    flush=True,
                )
        finally:
            peers.end_tree(proc.pid)


if __name__ == "__main__":
    main()
