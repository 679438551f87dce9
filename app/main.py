"""The app factory, its lifespan, and the ``cifar10-serve`` command.

``cifar10-serve`` and ``uvicorn --factory app.main:create_app`` both work (nothing is built at
import time); run one worker per container (each worker would load its own model and keep its
own metrics) and scale with replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.direct import add_routes
from app.api.head import HeadAsGetMiddleware
from app.api.main import routers
from app.api.openapi import complete as complete_openapi
from app.api.openapi import document_responses
from app.auth import APIKeys, add_security_to_openapi, parse_keys
from app.batching import MicroBatcher
from app.config import Settings, get_settings
from app.cpu import cpu_report
from app.errors import install_error_handlers
from app.limits import BodyBudget, BodyLimitMiddleware, PixelBudget, RouteCaps
from app.memory import (
    collect_young_objects_less_often,
    freeze_long_lived_objects,
    return_large_blocks_to_the_system,
)
from app.metrics import Metrics, MetricsMiddleware
from app.model import ModelLoadError, ServedModel, load_served_model
from app.reload import ModelReloader
from app.safety_net import SafetyNetMiddleware
from app.web import routes as web

log = logging.getLogger("app")

TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}

DESCRIPTION = """
Classifies an image into one of the 10 CIFAR-10 classes with a ResNet50.

`curl -F file=@samples/ship.png http://localhost:8000/predict`

Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.
"""


def package_version() -> str:
    """The installed project's version (``pyproject.toml`` is its one definition)."""
    try:
        return version("cifar10-resnet50-service")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def create_app(settings: Settings | None = None, model: ServedModel | None = None) -> FastAPI:
    """Build the app. The model is loaded (unless given) and warmed up in the lifespan."""
    settings = settings or get_settings()
    return_large_blocks_to_the_system()  # app.memory: what a flood of large bodies leaves
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Only the app's state (and the batcher) may refer to the served model, so that a
        # reload's swap leaves nothing holding the old one: the preloaded model is taken out.
        loaded, app.state.preloaded = app.state.preloaded, None
        loaded = loaded or await run_in_threadpool(
            load_served_model,
            settings.model_dir,
            settings.model_version,
            settings.runtime,
            settings.precision,
            settings.inference_streams,
        )
        metrics.model_info.info({k: str(v) for k, v in loaded.describe().items()})
        batcher = MicroBatcher(
            loaded.predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            queue_limit=settings.queue_limit,
            metrics=metrics,
            workers=loaded.streams,
            stall_s=settings.request_timeout_s,
        )
        batcher.swap(loaded.predict, loaded)  # answers name the model that computed them

        def warm_up(model: ServedModel = loaded) -> None:
            model.warm_up(settings.warmup_runs, (1, settings.max_batch_size))
            collect_young_objects_less_often()  # app.memory: a request's objects die young
            freeze_long_lived_objects()  # app.memory: what lives as long as the server
            metrics.ready.set(1)
            log.info("model warmed up; ready")

        app.state.model, app.state.batcher = loaded, batcher
        reload_task = None
        if settings.model_poll_s > 0:  # (never with a pinned version: the settings refuse it)
            app.state.reloader = ModelReloader(app.state, settings, metrics)
            reload_task = asyncio.create_task(app.state.reloader.run())
        loop = asyncio.get_running_loop()
        log.info(
            "serving %s; event loop %s.%s",
            loaded.describe(),
            type(loop).__module__,
            type(loop).__name__,
        )
        batcher.start(warm_up)
        del loaded, warm_up
        try:
            yield
        finally:
            if reload_task is not None:
                reload_task.cancel()
            metrics.ready.set(0)
            await batcher.close(settings.shutdown_timeout_s)
            app.state.batcher = None

    app = FastAPIOffline(
        # FastAPI's native OpenTelemetry checks for a configured SDK on every request (0.03 ms
        # of the event loop's time each, measured): only where it is asked for
        telemetry=None if settings.opentelemetry else TELEMETRY_OFF,
        redoc_url=None,  # app.web.routes serves ReDoc, without the logo it loads from a CDN
        title="CIFAR-10 ResNet50 classifier",
        version=package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.state.api_keys = APIKeys(parse_keys(settings.api_keys))
    app.state.pixels_budget = PixelBudget(settings.max_decoding_pixels)
    app.state.body_budget = BodyBudget(settings.max_buffered_bytes, metrics)
    app.state.route_caps = RouteCaps.from_settings(settings)
    app.state.model = app.state.batcher = app.state.reloader = None
    app.state.preloaded = model
    install_error_handlers(app)
    add_routes(app, [*routers, web.router])

    fastapi_openapi = app.openapi  # FastAPI's, generated once from the routes

    def plain_openapi() -> dict:
        return document_responses(fastapi_openapi())

    def openapi() -> dict:
        """The routes' document, completed with the served model and the limits (and the key
        schemes where keys are configured)."""
        schema = plain_openapi()  # (a new copy each time)
        if app.state.api_keys.enabled:
            schema = add_security_to_openapi(schema)
        return complete_openapi(schema, app.state.model, settings)  # (its 401s' examples too)

    app.openapi = openapi
    add_middleware(app, settings, metrics, app.state.body_budget)
    return app


def add_middleware(app: FastAPI, settings: Settings, metrics: Metrics, budget: BodyBudget) -> None:
    """The app's middleware, outermost last (``benchmarks/middleware_cost.py`` measures it)."""
    app.add_middleware(HeadAsGetMiddleware)  # innermost: the metrics count the HEAD as sent
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        budget=budget,
        grace_s=settings.body_grace_s,
    )
    app.add_middleware(SafetyNetMiddleware, metrics=metrics)  # request ids; JSON 500s
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every status


def run(argv: list[str] | None = None) -> None:
    """``cifar10-serve``: load the model (one-line error if unusable), then serve with uvicorn."""
    import uvicorn

    from app.graceful import GracefulServer

    parser = argparse.ArgumentParser(
        prog="cifar10-serve",
        description="Serve the CIFAR-10 model over HTTP. "
        "Every option can also be set as a CIFAR10_* environment variable (see README).",
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--model-version", type=int)
    parser.add_argument("--runtime", help="auto, openvino or tensorflow")
    parser.add_argument("--precision", help="auto, f32, bf16 or int8")
    parser.add_argument("--inference-streams", type=int, help="batches computed at once")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        print(f"error: invalid setting: {problems}", file=sys.stderr)
        sys.exit(1)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        model = load_served_model(
            settings.model_dir,
            settings.model_version,
            settings.runtime,
            settings.precision,
            settings.inference_streams,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("CPU: %s", cpu_report())
    app = create_app(settings, model)
    del model  # the app holds it, and lets go of it when a reload swaps in another version
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Access lines are logged at info; above it uvicorn would still format each one's
        # fields before the logger drops it.
        access_log=settings.log_level.lower() in ("trace", "debug", "info"),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=settings.keep_alive_s,
        root_path=settings.root_path,
    )
    server = GracefulServer(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the port could not be bound
