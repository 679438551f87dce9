"""What Ray Serve's HTTP proxy does with a request whose replica is lost under it (its process
killed, its node gone): it answers a bare ``500 Internal Server Error`` (measured on Ray 2.60:
about 10 of 300 requests under 16 clients when one of two replicas was killed), which no client
retries. This middleware, which the proxy loads on every node
(``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=app.ray_proxy:middlewares`` in the environment of
``ray start``), sends such a request once more, to another replica (every route of this service
computes the same answer twice: it is safe to repeat), and answers what it still cannot, or a
request whose body was too large to keep, with a ``503`` and ``Retry-After``, in the shape of the
path's protocol, so that a client retries it.

It keeps a request's body to send it again only up to ``RETRY_BODY_BYTES`` (one large upload
of 32 images of the default limit does not fit; a CIFAR-10 image is a few KB), and all kept
bodies together within ``RETRY_BUDGET_BYTES``: a body beyond either passes through as it
streams, and is answered 503 if its replica is lost.
"""

from __future__ import annotations

import json
import logging

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.limits import BodyBudget, declared_length

log = logging.getLogger(__name__)

RETRY_BODY_BYTES = 1024 * 1024
RETRY_BUDGET_BYTES = 64 * 1024 * 1024
LOST_MESSAGE = "the replica computing this request was lost; retry"


def middlewares() -> list[Middleware]:
    """What ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names: the proxy's middlewares."""
    return [Middleware(RetryLostReplica)]


class RetryLostReplica:
    """A request the proxy could not answer (no answer started: its replica was lost) is sent
    once more with its kept body; what still has no answer gets a 503 (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = RETRY_BODY_BYTES,
        budget: BodyBudget | None = None,
    ) -> None:
        self.app, self.max_body = app, max_body
        self.budget = budget or BodyBudget(RETRY_BUDGET_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = declared_length(headers.get(b"content-length"))
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        size = declared if declared is not None else (self.max_body if chunked else 0)
        if size > self.max_body or not self.budget.reserve(size):
            await self._once(scope, receive, send)  # not kept: no second try
            return
        try:
            kept, rest = await _keep_body(receive, self.max_body)
            if rest is not None:  # a chunked body longer than it may keep
                await self._once(scope, _replay(kept, receive, rest), send)
                return
            for attempt in (1, 2):
                if await self._try(scope, _replay(kept, receive, None), send):
                    return
                log.warning("%s %s: its replica was lost (try %d of 2)", *_line(scope), attempt)
            await _unavailable(scope, send)
        finally:
            self.budget.release(size)

    async def _once(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._try(scope, receive, send):
            await _unavailable(scope, send)

    async def _try(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether the proxy started an answer (a lost replica leaves none started)."""
        started = False

        async def watching(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except Exception:
            if started:
                raise
            log.exception("%s %s: the proxy failed before answering", *_line(scope))
        return started


async def _keep_body(receive: Receive, limit: int) -> tuple[list[Message], Message | None]:
    """The body's messages until its end, or until it passes ``limit`` (then the message that
    passed it is the second value: the rest is still to be received)."""
    kept, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return [*kept, message], None
        size += len(message.get("body", b""))
        if size > limit:
            return kept, message
        kept.append(message)
        if not message.get("more_body", False):
            return kept, None


def _replay(kept: list[Message], receive: Receive, rest: Message | None) -> Receive:
    """A ``receive`` that gives the kept messages again, then (``rest``) the rest of the body,
    then what the client sends (its disconnect)."""
    queue = [*kept, *([rest] if rest is not None else [])]

    async def replaying() -> Message:
        return queue.pop(0) if queue else await receive()

    return replaying


async def _unavailable(scope: Scope, send: Send) -> None:
    body = json.dumps(error_body("replica_lost", LOST_MESSAGE, scope)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    # the id Serve's own middleware gave the request on its first try (it answers it there)
    headers += [(k, v) for k, v in scope["headers"] if k == b"x-request-id"][:1]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _line(scope: Scope) -> tuple[str, str]:
    return scope.get("method", "-"), scope.get("path", "-")
