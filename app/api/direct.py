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
``DirectRoute`` refuses to ignore silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[..., Awaitable[Response]]


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is ``async def endpoint(request, **path_params) ->
    Response``, called as is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependencies or self.dependant.dependencies:
            raise TypeError(f"{self.path}: a DirectRoute endpoint takes no dependencies")
        endpoint: Endpoint = self.endpoint

        async def call_endpoint(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        return call_endpoint
