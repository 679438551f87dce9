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
from starlette.types import Receive, Scope, Send

from app.errors import error_response_for

Endpoint = Callable[..., Awaitable[Response]]


class DirectRoutes:
    """The endpoints of ``paths`` (``(method, path template)`` of routes in ``routers`` whose
    endpoint takes the request and the path's parameters): ``match`` finds a request's route,
    and the instance, as an ASGI app, calls the endpoint of a request that ``match`` found
    (``scope["route"]`` and ``scope["path_params"]`` set), as FastAPI's router would."""

    def __init__(self, routers: list[APIRouter], paths: list[tuple[str, str]]) -> None:
        self.routes: list[tuple[str, re.Pattern, APIRoute]] = []
        for router in routers:
            for route in router.routes:
                for method in getattr(route, "methods", ()):
                    if isinstance(route, APIRoute) and (method, route.path) in paths:
                        self.routes.append((method, route.path_regex, route))
        missing = set(paths) - {(m, r.path) for m, _, r in self.routes}
        if missing:
            raise ValueError(f"no such routes: {sorted(missing)}")

    def match(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        """The route and path parameters of an HTTP request to one of the paths."""
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            for route_method, regex, route in self.routes:
                if method == route_method and (found := regex.match(path)):
                    return route, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: Endpoint = scope["route"].endpoint
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request, **scope["path_params"])
        except Exception as exc:
            response = await error_response_for(request, exc)
            if response is None:
                raise  # the safety net answers it
        await response(scope, receive, send)
