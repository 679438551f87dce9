"""Overload: 256 concurrent clients for 20 s against the real server, whose queue is kept small
so that it overflows. Every answer is a 200 or a 503 with ``Retry-After``; no connection is
reset or left hanging; the server's memory is flat afterwards and it still serves.
(``OVERLOAD_SECONDS`` shortens or lengthens the run.)"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, image_bytes

CLIENTS = 256
SECONDS = float(os.environ.get("OVERLOAD_SECONDS", "20"))
PNG = image_bytes()


@pytest.fixture(scope="module")
def small_queue_server(tiny_model_root):
    s = Server(tiny_model_root, queue_limit=4, max_files=4, max_batch_size=2)
    s.wait_ready()
    yield s
    s.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _hammer(base: str, seconds: float) -> tuple[Counter, int, list[str]]:
    """Each of ``CLIENTS`` keep-alive connections posts an image again and again."""
    statuses: Counter = Counter()
    no_retry_after = 0
    failures: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def one_client() -> None:
            nonlocal no_retry_after
            while loop.time() < deadline:
                try:
                    r = await client.post("/predict", files={"file": ("a.png", PNG, "image/png")})
                except httpx.TransportError as exc:  # reset, refused, timed out
                    failures.append(repr(exc))
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 503 and "retry-after" not in r.headers:
                    no_retry_after += 1

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return statuses, no_retry_after, failures


def test_256_clients_get_only_200_or_503_with_retry_after_and_memory_stays_flat(
    small_queue_server,
):
    server = small_queue_server
    asyncio.run(_hammer(server.base, 3))  # connections, buffers and caches settle first
    before = rss_mib(server.proc.pid)
    statuses, no_retry_after, failures = asyncio.run(_hammer(server.base, SECONDS))
    after = rss_mib(server.proc.pid)
    assert not failures, failures[:5]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0 and statuses[503] > 0, statuses  # it did overflow, and served
    assert no_retry_after == 0
    assert after - before < 32, f"RSS {before:.0f} -> {after:.0f} MiB over {sum(statuses.values())}"
    assert httpx.get(f"{server.base}/health/ready").status_code == 200
    ok = httpx.post(f"{server.base}/predict", files={"file": ("a.png", PNG, "image/png")})
    assert ok.status_code == 200
    assert "Traceback" not in server.log()
    print(f"overload: {dict(statuses)}, RSS {before:.0f} -> {after:.0f} MiB")
