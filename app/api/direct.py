"""Direct calls of the hot endpoints, past the framework's per-request layers.

``POST /predict`` is the path nearly every request takes. FastAPI reaches it through its
router, an exception middleware, an exit stack, a body-limit and a telemetry wrapper and its
request handler: about a fifth of the event loop's time per request (py-spy, 32 clients). This
ASGI layer sits inside the app's own middleware (metrics, request ids and the safety net, the
body-size cap all still apply) and calls the same endpoint function with a Starlette
``Request``, answering its errors through the same handlers (``app.errors``). Every other
request goes on to FastAPI unchanged; the route stays declared there, so the OpenAPI document
and the route label in the metrics are the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response_for

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """Call the endpoints of ``paths`` (``(method, path)`` of routes in ``routers`` whose
    endpoint takes only the request) directly; pass everything else on to ``app``."""

    def __init__(
        self, app: ASGIApp, routers: list[APIRouter], paths: list[tuple[str, str]]
    ) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], tuple[Endpoint, APIRoute]] = {}
        for router in routers:
            for route in router.routes:
                for method in getattr(route, "methods", ()):
                    if isinstance(route, APIRoute) and (method, route.path) in paths:
                        self.routes[(method, route.path)] = (route.endpoint, route)
        missing = set(paths) - set(self.routes)
        if missing:
            raise ValueError(f"no such routes: {sorted(missing)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = (
            self.routes.get((scope.get("method"), scope.get("path")))
            if scope["type"] == "http"
            else None
        )
        if hit is None:
            await self.app(scope, receive, send)
            return
        endpoint, scope["route"] = hit
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await error_response_for(request, exc)
            if response is None:
                raise  # the safety net answers it
        await response(scope, receive, send)
