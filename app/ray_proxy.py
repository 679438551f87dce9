"""What Ray Serve's HTTP proxy does with a request whose replica is lost under it (its process
killed, its node gone): it answers a bare ``500 Internal Server Error`` (measured on Ray 2.60:
4 and 9 of about 600 requests under 16 clients when one of two replicas was killed), which no
client retries. This middleware, which the proxy loads on every node
(``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=app.ray_proxy:middlewares`` in the environment of
``ray start``), sends such a request once more, to another replica (every route of this service
computes the same answer twice: it is safe to repeat), and answers what it still cannot, or a
request whose body was too large to keep, with a ``503`` and ``Retry-After``, in the shape of the
path's protocol, so that a client retries it. A client that left is neither answered nor
retried.

The body passes through as Serve's proxy reads it (the proxy reads it whole as it comes, and
answers ``100 Continue`` itself), and a copy is kept to send again: only up to
``RETRY_BODY_BYTES`` (one large upload of 32 images of the default limit does not fit; a
CIFAR-10 image is a few KB), and all kept copies together within ``RETRY_BUDGET_BYTES``,
reserved chunk by chunk; a body beyond either is not kept, and its request is answered 503 if
its replica is lost. The second try goes where Serve's router sends it: as a rule it has
dropped the lost replica by then (``RETRY_DELAY_S``). Where the
lost replica had not read the whole body, the rest is read before the second try, within
``RETRY_BODY_SECONDS``.

A request that itself killed its replica (none should: the service bounds what a request may
take) would take a second replica with it; the second try is the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.limits import BodyBudget, declared_length

log = logging.getLogger(__name__)

RETRY_BODY_BYTES = 1024 * 1024
RETRY_BUDGET_BYTES = 64 * 1024 * 1024
RETRY_BODY_SECONDS = 10.0
RETRY_DELAY_S = 0.1  # before the second try: the router hears of the loss meanwhile
LOST_MESSAGE = "the replica computing this request was lost; retry"
SENT_AGAIN = "its replica was lost; sent again and answered"
ANSWERED_503 = "lost again, or not kept; answered 503"


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
        body_seconds: float = RETRY_BODY_SECONDS,
    ) -> None:
        self.app, self.max_body, self.body_seconds = app, max_body, body_seconds
        self.budget = budget or BodyBudget(RETRY_BUDGET_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(dict(scope["headers"]).get(b"content-length"))
        too_large = declared is not None and declared > self.max_body
        body = _Copy(receive, -1 if too_large else self.max_body, self.budget)
        # each try its own scope: Serve's proxy rewrites the path and root_path of the one it
        # is given; the second takes the first's headers (Serve's request id added to them)
        first = {**scope, "headers": list(scope["headers"])}
        try:
            if await self._try(first, body.receive, send) or body.client_left:
                return
            log.warning("%s %s: its replica was lost", *_line(scope))
            if await body.read_rest(self.body_seconds):
                await asyncio.sleep(RETRY_DELAY_S)
                second = {**scope, "headers": list(first["headers"])}
                if await self._try(second, body.replay(), send):
                    log.warning("%s %s: %s", *_line(scope), SENT_AGAIN)
                    return
            if not body.client_left:
                log.warning("%s %s: %s", *_line(scope), ANSWERED_503)
                await _unavailable(first, send)
        finally:
            body.release()

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


class _Copy:
    """The request's body as the proxy reads it, a copy kept while ``keeping``: up to ``limit``
    bytes (-1: none), each chunk's bytes reserved from ``budget`` as it comes (beyond it, no
    copy); ``release`` gives them back."""

    def __init__(self, receive: Receive, limit: int, budget: BodyBudget) -> None:
        self._receive, self.limit, self.budget = receive, limit, budget
        self.kept: list[Message] = []
        self.size, self.held, self.ended, self.client_left = 0, 0, False, False
        self.keeping = limit >= 0

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.client_left = True
        elif message["type"] == "http.request":
            n = len(message.get("body", b""))
            self.size += n
            self.ended = not message.get("more_body", False)
            if self.keeping and self.size <= self.limit and self.budget.reserve(n):
                self.kept.append(message)
                self.held += n
            else:
                self.keeping, self.kept = False, []
                self.release()
        return message

    def release(self) -> None:
        self.budget.release(self.held)
        self.held = 0

    async def read_rest(self, seconds: float) -> bool:
        """Read what the lost try had not (within ``seconds``); whether the whole body is kept."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.keeping and not self.ended and not self.client_left:
                    await self.receive()
        return self.keeping and self.ended and not self.client_left

    def replay(self) -> Receive:
        """A ``receive`` that gives the kept body again, then what the client sends next."""
        queue = list(self.kept)

        async def replaying() -> Message:
            return queue.pop(0) if queue else await self.receive()

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
