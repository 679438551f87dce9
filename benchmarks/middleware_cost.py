"""What the app's middleware costs a request, in-process: the CPU of one request through
FastAPI with and without it, on a trivial route.

    python benchmarks/middleware_cost.py [--requests 4000] [--rounds 7]

Builds small apps the way ``app.main.create_app`` does (FastAPI without native telemetry, the
app's error handlers, a direct route ``POST /echo`` that reads its 100-byte body with
``app.limits.read_body`` and answers a small JSON), then calls each through ASGI under uvloop,
with no server and no socket: ``bare`` (no middleware of the app's), each of the app's four
middlewares alone, ``all`` (``app.main.add_middleware``, as served), and ``bare + 1 layer``
(one more middleware that only wraps ``receive`` and ``send``: what each layer costs by being
one). Rounds interleave the apps; prints the CPU and, per app, the median and lowest process
CPU time per request over the rounds. Every answer must be 200. Compare only within one run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from fastapi import APIRouter, FastAPI, Request  # noqa: E402
from fastapi_offline import FastAPIOffline  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from app.api.direct import DirectRoute, add_routes  # noqa: E402
from app.api.head import HeadAsGetMiddleware  # noqa: E402
from app.config import Settings  # noqa: E402
from app.cpu import cpu_report  # noqa: E402
from app.errors import install_error_handlers  # noqa: E402
from app.limits import BodyBudget, BodyLimitMiddleware, read_body  # noqa: E402
from app.main import TELEMETRY_OFF, add_middleware  # noqa: E402
from app.memory import collect_young_objects_less_often, freeze_long_lived_objects  # noqa: E402
from app.metrics import Metrics, MetricsMiddleware  # noqa: E402
from app.safety_net import SafetyNetMiddleware  # noqa: E402

BODY = b"x" * 100
HEADERS = [
    (b"host", b"localhost:8000"),
    (b"user-agent", b"wrk"),
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(BODY)).encode()),
]


class OneMoreLayer:
    """A middleware that does nothing but wrap ``receive`` and ``send``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receiving() -> Message:
            return await receive()

        async def sending(message: Message) -> None:
            await send(message)

        await self.app(scope, receiving, sending)


def build(name: str, settings: Settings) -> FastAPI:
    app = FastAPIOffline(telemetry=TELEMETRY_OFF)
    router = APIRouter(route_class=DirectRoute)

    async def echo(request: Request) -> Response:
        body = await read_body(request, 1024)
        return Response(b'{"bytes": %d}' % len(body), media_type="application/json")

    router.add_api_route("/echo", echo, methods=["POST"])
    install_error_handlers(app)
    add_routes(app, [router])
    metrics = Metrics()
    budget = BodyBudget(settings.max_buffered_bytes, metrics)
    alone = {
        "head": (HeadAsGetMiddleware, {}),
        "body limits": (
            BodyLimitMiddleware,
            {"max_bytes": settings.max_request_bytes, "budget": budget, "grace_s": 10.0},
        ),
        "request id + safety net": (SafetyNetMiddleware, {"metrics": metrics}),
        "metrics": (MetricsMiddleware, {"metrics": metrics}),
        "bare + 1 layer": (OneMoreLayer, {}),
    }
    if name == "all":
        add_middleware(app, settings, metrics, budget)
    elif name in alone:
        cls, kwargs = alone[name]
        app.add_middleware(cls, **kwargs)
    return app


async def request(app: FastAPI, statuses: list[int]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": list(HEADERS),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)


async def measure(names: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    settings = Settings(model_dir=ROOT / "models")
    apps = {name: build(name, settings) for name in names}
    statuses: list[int] = []
    for app in apps.values():
        for _ in range(200):  # warm-up: labelled series, caches
            await request(app, statuses)
    threshold, frozen_by_caller = gc.get_threshold(), gc.get_freeze_count() > 0
    collect_young_objects_less_often()  # the collector as the server sets it (app.memory)
    if not frozen_by_caller:
        freeze_long_lived_objects()
    us: dict[str, list[float]] = {name: [] for name in names}
    try:
        for _ in range(rounds):
            for name, app in apps.items():
                start = time.process_time()
                for _ in range(requests):
                    await request(app, statuses)
                us[name].append((time.process_time() - start) / requests * 1e6)
    finally:  # (when imported, as by the tests: the caller's collector as it was)
        if not frozen_by_caller:
            gc.unfreeze()
        gc.set_threshold(*threshold)
    wrong = [s for s in statuses if s != 200]
    if wrong:
        raise SystemExit(f"{len(wrong)} answers were not 200: {sorted(set(wrong))}")
    return us


NAMES = ["bare", "bare + 1 layer", "head", "body limits", "request id + safety net", "metrics"]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per app and round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    hw = cpu_report()
    print(
        f"machine: {hw['cpu']} (family {hw.get('cpu_family')} model {hw.get('model')}), "
        f"{hw['cores']} cores, flags: {' '.join(hw['flags']) or 'none of interest'}"
    )
    us = uvloop.run(measure([*NAMES, "all"], args.requests, args.rounds))
    bare = statistics.median(us["bare"])
    print(f"CPU per request, {args.rounds} rounds of {args.requests} requests (µs):")
    print(f"{'app':26s} {'median':>8s} {'lowest':>8s} {'over bare':>10s}")
    report = {}
    for name, values in us.items():
        median = statistics.median(values)
        over = median - bare
        report[name] = {"median_us": median, "lowest_us": min(values), "over_bare_us": over}
        print(f"{name:26s} {median:8.1f} {min(values):8.1f} {over:10.1f}")
    return report


if __name__ == "__main__":
    main()
