"""The inference endpoints' route class: a normal FastAPI route that calls its endpoint directly.

The inference endpoints (``POST /predict``, ``.../infer``, ``...:predict``) are the paths nearly
every request takes, and they read their own bodies and parameters (``InferenceCore`` and the
protocol codecs), so FastAPI's per-request handler would only resolve a ``Request`` for them:
its dependency solving, body handling and response validation are a good part of the event
loop's time per request. ``DirectRoute`` is an ``APIRoute`` (FastAPI's documented extension
point: a custom route class) whose handler calls the endpoint with the request and the path's
parameters. Everything else is the app's as for any route: routing (and so ``root_path``),
the middleware, the exception handlers, the route label in the metrics, the OpenAPI document.
The endpoints take no dependencies (``InferenceCore.for_request`` does the checks), which
``DirectRoute`` refuses to ignore silently. ``add_routes`` puts these routes first in the app's
own router: FastAPI 0.165 keeps an included router as a route of its own, a second matching
pass for every request through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

Endpoint = Callable[..., Awaitable[Response]]


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is ``async def endpoint(request, **path_params) ->
    Response``, called as is, through Starlette's ``request_response`` (the exception handlers
    apply; FastAPI's copy adds two exit stacks per request for dependencies with ``yield``,
    which a direct route has none of)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependencies or self.dependant.dependencies:
            raise TypeError(f"{self.path}: a DirectRoute endpoint takes no dependencies")
        endpoint: Endpoint = self.endpoint

        async def call_endpoint(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        return call_endpoint


def add_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Every router's routes on ``app``: the direct routes first in its own router (the
    routes, not a copy; the OpenAPI document and the metrics see them as any route), every
    other router included as FastAPI does it."""
    if app.router.dependencies:
        raise ValueError("the app's dependencies would not run for its direct routes")
    direct = [r for router in routers for r in router.routes if isinstance(r, DirectRoute)]
    app.router.routes[:0] = direct
    for router in routers:
        if not any(isinstance(r, DirectRoute) for r in router.routes):
            app.include_router(router)
        elif not all(isinstance(r, DirectRoute) for r in router.routes):
            raise ValueError("a router holds direct routes and others: split it")
