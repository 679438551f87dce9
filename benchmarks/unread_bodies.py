"""What connections sending bodies nobody reads cost the server (issue 42's review).

Starts ``python -m app`` on the given model with a keep-alive of ``--keep-alive`` seconds, opens
``--connections`` connections that each send a GET declaring a 1 GB body and ``--sent`` bytes
of it, then a byte a second (a trickle, which stops uvicorn's keep-alive timer each time), waits
``--wait`` seconds (longer than the keep-alive), and prints the server's RSS growth and how many
of those connections it still holds open. Run it on two
revisions to compare (``git stash`` or a second work tree); prints the CPU as every benchmark
here does.

    .venv/bin/python benchmarks/unread_bodies.py --model-dir models/cifar10-resnet50
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cpu import cpu_report  # noqa: E402
from tests.helpers import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/cifar10-resnet50"))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--sent", type=int, default=400_000, help="bytes of each body sent")
    parser.add_argument("--wait", type=float, default=6.0)
    parser.add_argument("--keep-alive", type=int, default=2)
    args = parser.parse_args()
    server = Server(args.model_dir, keep_alive_s=args.keep_alive)
    try:
        server.wait_ready()
        proc = psutil.Process(server.proc.pid)
        time.sleep(1)
        before = proc.memory_info().rss
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
        conns = [
            socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.connections)
        ]
        data = head + b"x" * args.sent
        stop = threading.Event()
        for conn in conns:  # (a thread each: the server may stop reading before all is sent)
            threading.Thread(target=_send, args=(conn, data, stop), daemon=True).start()
        time.sleep(args.wait)
        after = proc.memory_info().rss
        held = sum(1 for c in proc.net_connections() if c.status == psutil.CONN_ESTABLISHED)
        print(
            json.dumps(
                {
                    "cpu": cpu_report(),
                    "connections": args.connections,
                    "keep_alive_s": args.keep_alive,
                    "waited_s": args.wait,
                    "bytes_sent_each": args.sent,
                    "rss_before_mib": round(before / 2**20, 1),
                    "rss_growth_mib": round((after - before) / 2**20, 1),
                    "connections_still_open": held,
                },
                indent=1,
            )
        )
        stop.set()
        for conn in conns:
            conn.close()
    finally:
        server.stop()


def _send(conn: socket.socket, data: bytes, stop: threading.Event) -> None:
    try:
        conn.sendall(data)
        while not stop.wait(1.0):  # the trickle
            conn.sendall(b"x")
    except OSError:
        pass  # closed by the server


if __name__ == "__main__":
    main()
