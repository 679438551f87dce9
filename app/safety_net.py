"""Request ids and the last line of defence: no answer is ever a plain-text 500.

Every answer carries ``X-Request-ID``: the client's own (when it sent a sane one, so that ids
can be followed across services) or a new random one. An exception that no handler mapped (a
bug, or a model that raised) is answered with a JSON 500 in the protocol's error shape whose
message names the request id, logged with its traceback and the same id, and counted in
``http_unhandled_errors_total``; the server goes on serving. Starlette's own last handler
would answer plain text and re-raise.
"""

from __future__ import annotations

import logging
import random
import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.metrics import Metrics

log = logging.getLogger("app.errors")

HEADER = b"x-request-id"
# A client's id is kept when it is short, visible ASCII without separators
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@+=/-]{1,128}")


def internal_error(request_id: str) -> str:
    """The message of a 500: the id under which the log has the traceback."""
    return f"internal server error (request id {request_id})"


def new_request_id() -> str:
    """16 hex digits from the process's random generator (seeded from the OS, reseeded in a
    forked child): unique enough to find a request in the logs, without a system call."""
    return f"{random.getrandbits(64):016x}"


def request_id_of(scope: Scope) -> str:
    """The id ``SafetyNetMiddleware`` gave this request (for handlers and logs)."""
    return scope.get("state", {}).get("request_id", "-")


class SafetyNetMiddleware:
    """Give every request an id (``X-Request-ID`` on every answer) and answer any unhandled
    exception with a JSON 500 that names it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope["headers"]:
            if key == HEADER:
                given = value
                break
        request_id = given.decode() if given and _SANE_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (HEADER, request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            path = scope.get("path", "/")
            log.exception("request %s %s %s failed: %s", request_id, scope.get("method"), path, exc)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.unhandled_errors.labels(route).inc()
            if started:  # too late for an answer: the server closes the connection
                raise
            body = orjson.dumps(error_body("internal_error", internal_error(request_id), scope))
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        id_header,
                        # what failed may have left the request's body unread, or the
                        # connection in an unknown state: uvicorn's own 500 closes it too
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
