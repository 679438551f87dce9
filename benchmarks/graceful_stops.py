"""How many connections a SIGTERM under load loses (``app/graceful.py``).

Starts ``python -m app`` on the given model ``--stops`` times, as the tests start it
(``tests.helpers.Server``: access log on); each time ``--clients`` clients send ``/predict``
requests, each on a new connection, until ``--answers`` are answered, then the server gets
SIGTERM. Counts each client outcome after the stop: ``lost`` is a connection made but never
answered (reset), ``refused`` one never made (nothing listening). Prints how many stops lost a
connection, how many were lost in all, and the CPU. To measure the stop before the SYN filter:

    .venv/bin/python benchmarks/graceful_stops.py --tiny
    git show a845d31:app/graceful.py > app/graceful.py   # taking the queue, no SYN filter
    .venv/bin/python benchmarks/graceful_stops.py --tiny; git checkout app/graceful.py

``--tiny`` serves the tests' tiny model: answered sooner, more connections open and close per
second, so more of them meet the moment the listener closes (the served ResNet50 lost none in
25 stops before and after the SYN filter; the tiny model 4 in 75 before, none in 100 after).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cpu import cpu_report  # noqa: E402
from deploy.local_server import multipart_body  # noqa: E402
from tests.helpers import Load, Server, export_tiny_model, image_bytes  # noqa: E402


def one_stop(model_dir: Path, clients: int, answers: int) -> dict:
    server = Server(model_dir)
    try:
        server.wait_ready()
        load = Load(server.port, *multipart_body("file", "x.png", image_bytes(seed=1)), clients)
        try:
            load.wait_for(answers)
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=60)
            time.sleep(0.3)  # the clients meet the closed port
        finally:
            seen = load.stop()
    finally:
        server.stop()
    return {k: len(v) for k, v in seen.items()} | {"lost_as": sorted(set(seen["lost"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/cifar10-resnet50"))
    parser.add_argument("--stops", type=int, default=25)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--answers", type=int, default=200, help="answered before the stop")
    parser.add_argument("--tiny", action="store_true", help="serve the tests' tiny model instead")
    args = parser.parse_args()
    if args.tiny:
        args.model_dir = export_tiny_model(Path(tempfile.mkdtemp(prefix="graceful-"))).parent
    stops = [one_stop(args.model_dir, args.clients, args.answers) for _ in range(args.stops)]
    lost = [s["lost"] for s in stops]
    print(
        json.dumps(
            {
                "cpu": cpu_report(),
                "model_dir": str(args.model_dir),
                "clients": args.clients,
                "stops": args.stops,
                "stops_that_lost_a_connection": sum(n > 0 for n in lost),
                "connections_lost": sum(lost),
                "answered_per_stop_median": sorted(s["answered"] for s in stops)[len(stops) // 2],
                "lost_as": sorted({x for s in stops for x in s["lost_as"]}),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
