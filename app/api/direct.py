"""Direct calls of the hot endpoints, past the framework's per-request layers.

The inference endpoints (``POST /predict``, ``.../infer``, ``...:predict``) are the paths
nearly every request takes. FastAPI reaches them through its router, an exception middleware,
an exit stack, a body-limit and a telemetry wrapper and its request handler: about a fifth of
the event loop's time per request (py-spy, 32 clients). This ASGI layer sits inside the app's
own middleware (metrics, request ids and the safety net, the body-size cap all still apply)
and calls the same endpoint functions, with a Starlette ``Request`` and the path's parameters,
answering their errors through the same handlers (``app.errors``). Every other request goes on
to FastAPI unchanged; the routes stay declared there, so the OpenAPI document and the route
labels in the metrics are the same.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response_for

Endpoint = Callable[..., Awaitable[Response]]


class DirectRoutes:
    """Call the endpoints of ``paths`` (``(method, path template)`` of routes in ``routers``
    whose endpoint takes the request and the path's parameters) directly; pass everything else
    on to ``app``."""

    def __init__(
        self, app: ASGIApp, routers: list[APIRouter], paths: list[tuple[str, str]]
    ) -> None:
        self.app = app
        self.routes: list[tuple[str, re.Pattern, Endpoint, APIRoute]] = []
        for router in routers:
            for route in router.routes:
                for method in getattr(route, "methods", ()):
                    if isinstance(route, APIRoute) and (method, route.path) in paths:
                        self.routes.append((method, route.path_regex, route.endpoint, route))
        missing = set(paths) - {(m, r.path) for m, _, _, r in self.routes}
        if missing:
            raise ValueError(f"no such routes: {sorted(missing)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            for route_method, regex, endpoint, route in self.routes:
                if method == route_method and (match := regex.match(path)):
                    await self._call(endpoint, route, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _call(
        endpoint: Endpoint,
        route: APIRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["route"], scope["path_params"] = route, params
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request, **params)
        except Exception as exc:
            response = await error_response_for(request, exc)
            if response is None:
                raise  # the safety net answers it
        await response(scope, receive, send)
