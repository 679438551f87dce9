"""This service on Ray Serve: one replica is this service's own app (its routes, limits, errors,
micro-batcher and metrics) around one model, built in the replica from the settings the Serve
config gives; Serve's proxy spreads requests over the replicas, on every node, and scales them.

``deploy/ray/serve.yaml`` is the Serve config (``serve deploy`` / ``serve run``); its
application's ``args`` are the service's settings (the ``CIFAR10_*`` names in lower case:
``model_dir``, ``model_version``, ``runtime``, ``precision``, ...), which ``build`` checks before
anything is deployed. Installed with the ``ray`` extra (``pip install '.[ray]'``); nothing else
in the service imports Ray.

Health: Serve calls ``check_health`` on every replica periodically and replaces one that fails;
it fails when the replica's batcher has failed (a model that failed its warm-up, no inference
thread left) or a model call has run for four times the request timeout, as ``/health`` and
``/health/ready`` would say (not while the model warms up). ``/metrics`` is the answering
replica's own (Serve's proxy picks one); Ray's metrics (``ray_serve_*``) cover the deployment as
a whole.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.main import create_app
from app.reload import newest_version
from app.safety_net import HEADER

DEPLOYMENT = "Classifier"
WARM_UP_LIMIT_S = 600.0  # a replica whose model is not warm by then fails its start


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class Classifier:
    """One replica: the service's app, built from ``settings`` when the replica starts (the
    model is loaded and warmed up in the app's lifespan, as under uvicorn)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = Settings(**settings)
        self._app = None

    def __serve_build_asgi_app__(self):
        self._app = create_app(self._settings)
        return _for_serve(self._app)

    async def check_health(self) -> None:
        """What ``/health`` calls dead, and a failed warm-up: Serve replaces the replica."""
        batcher = self._app.state.batcher if self._app is not None else None
        if batcher is None:
            return  # (the lifespan has not built it yet, or the replica is stopping)
        problem = batcher.failure or batcher.hung()
        if problem:
            raise RuntimeError(problem)


def _for_serve(app: FastAPI) -> ASGIApp:
    """``app`` as a replica serves it:

    - its lifespan's startup completes once the model is warmed up (uvicorn reports ready
      before, and ``/health/ready`` says when), so that Serve counts the replica as running
      only when it answers at full speed; a failed warm-up fails the replica's start;
    - its answers without its own ``X-Request-ID``: Serve's proxy gives every request one
      (the client's, or a new one) before the app sees it, which the app keeps and names in
      its log, and adds it to the answer itself; two would be one too many. (A client's id
      that the app finds unfit, too long or with spaces, is replaced in the log only.)
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k != HEADER]
                message = {**message, "headers": kept}
            elif message["type"] == "lifespan.startup.complete":
                failure = await _warmed_up(app)
                if failure:
                    message = {"type": "lifespan.startup.failed", "message": failure}
            await send(message)

        await app(scope, receive, sending if scope["type"] in ("http", "lifespan") else send)

    return wrapped


async def _warmed_up(app: FastAPI, limit_s: float = WARM_UP_LIMIT_S) -> str | None:
    """Wait for the model's warm-up; why it failed (``None``: it succeeded)."""
    batcher = app.state.batcher
    deadline = asyncio.get_running_loop().time() + limit_s
    while not batcher.ready.is_set() and not batcher.failure:
        if asyncio.get_running_loop().time() > deadline:
            return f"the model's warm-up did not finish within {limit_s:g} s"
        await asyncio.sleep(0.05)
    return batcher.failure


def serve_settings(args: dict[str, Any]) -> dict[str, Any]:
    """The replicas' settings from the config's ``args``: checked (pydantic's error names a
    wrong one), and, unless the replicas poll for new versions (``model_poll_s``), the model
    version pinned: a ``model_version`` of null is the newest in ``model_dir`` as the node
    that builds the application sees it, and every replica, on every node, serves that one."""
    settings = {k: v for k, v in args.items() if v is not None}
    checked = Settings(**settings)
    if checked.model_version is None and checked.model_poll_s == 0:
        if not checked.model_dir.is_dir():
            raise ValueError(f"model_dir {checked.model_dir} is not a folder on this node")
        settings["model_version"] = newest_version(checked.model_dir)
    return settings


def build(args: dict[str, Any]) -> Application:
    """The Serve application for the config's ``args`` (``serve_settings``). A wrong setting
    fails here (``serve status`` shows the application DEPLOY_FAILED with the message naming
    it), not in every replica. Serve builds again only when the config changes: to roll out a
    new version, name it in ``model_version`` (or set ``model_poll_s``: each replica then
    reloads on its own, as without Ray)."""
    return Classifier.bind(serve_settings(args))
