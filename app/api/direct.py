"""Direct calls of the hot endpoints, past the framework's per-request layers.

The inference endpoints (``POST /predict``, ``.../infer``, ``...:predict``) are the paths
nearly every request takes. FastAPI reaches them through its telemetry check, Starlette's
error middleware, its own exception-telemetry and body-limit middleware, its router, an
exception middleware, an exit stack and its request handler: about a fifth of the event loop's
time per request (py-spy, 32 clients). ``DirectRoutes`` calls the same endpoint functions, with
a Starlette ``Request`` and the path's parameters, answering their errors through the same
handlers (``app.errors``), behind the app's own middleware (metrics, request ids and the safety
net, the body-size cap), which ``ServiceApp`` puts in front of them as a stack of its own.
Every other request goes to FastAPI unchanged, through the same middleware; the routes stay
declared there, so the OpenAPI document and the route labels in the metrics are the same.
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

    def match(self, scope: Scope) -> tuple[Endpoint, APIRoute, dict[str, str]] | None:
        """The endpoint, route and path parameters of an HTTP request to one of the paths."""
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            for route_method, regex, endpoint, route in self.routes:
                if method == route_method and (found := regex.match(path)):
                    return endpoint, route, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self.match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        endpoint, route, params = matched
        await self._call(endpoint, route, params, scope, receive, send)

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
