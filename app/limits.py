"""Request bodies, bounded by design: a cap per request, a cap per route, and a server-wide
budget of body bytes held at once.

``BodyLimitMiddleware`` sees every request before routing (GET and HEAD pass: no route of
theirs reads a body; their answer closes the connection when one was sent). A
``Content-Length`` over ``max_request_bytes`` is answered 413 without holding any of it; a body
that streams past it is cut off with 413. Every body's bytes are reserved from one budget,
``max_buffered_bytes`` for all requests together, from its declared length (or chunk by chunk as
it streams), and released when its request ends: a body the budget cannot hold now is answered
503 ``overloaded`` with ``Retry-After``. Every answer given before the body was read to its end
(these, a route's refusal, a 500) waits for the rest, read and discarded within the body's
deadline (its share of the budget released first), so that the client, still sending, sees
the answer instead of a reset connection; where the rest does not come in time (or the client
waits for ``100 Continue``), the answer closes the connection (a 500 always does). A body must
arrive within a grace (``body_grace_s``) plus one second per ``MIN_BODY_BYTES_PER_S``: a slow
or idle sender is answered 408 and its reservation released. Bodies are what a request's memory
grows with (the body, its parsed form, the decoded files), so the budget bounds the memory of a
flood of large requests; ``tests/e2e/test_memory_bounds.py`` measures it.

``PixelBudget`` bounds the other thing a request's memory grows with: the pixels of the images
being decoded at once (``max_decoding_pixels``); a decode waits for its turn.

``RouteCaps`` is what each inference route can carry with ``max_files`` images in its own
format, capped by ``max_request_bytes``; the routes read their bodies through ``read_body``,
which refuses a larger ``Content-Length`` before reading (413) and stops a stream that passes
the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import APIError, error_body
from app.metrics import Metrics

# Room for what is not image bytes: multipart part headers, JSON keys, the binary header.
PART_OVERHEAD = 1024
BODY_OVERHEAD = 64 * 1024
MAX_LENGTH_DIGITS = 18
# A body must arrive within a grace (``body_grace_s``) and then at this rate, or the request is
# answered 408 and its share of the budget freed: a client that declares a large body and sends
# it slowly, or never, holds the budget that long at most.
MIN_BODY_BYTES_PER_S = 1024 * 1024


def declared_length(value: bytes | str | None) -> int | None:
    """A ``Content-Length`` value: ASCII digits only, at most 18 of them; else ``None``."""
    if value is None:
        return None
    raw = value.encode("latin-1") if isinstance(value, str) else value
    if not raw.isdigit() or len(raw) > MAX_LENGTH_DIGITS:  # bytes.isdigit: ASCII only
        return None
    return int(raw)


def readable_bytes(n: int) -> str:
    """``10485760`` -> ``"10 MiB (10,485,760 bytes)"``: a size people read, and the exact one."""
    size, unit = float(n), "bytes"
    for next_unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, next_unit
    if unit == "bytes":
        return f"{n:,} bytes"
    shown = f"{size:.0f}" if size == int(size) else f"{size:.1f}"
    return f"{shown} {unit} ({n:,} bytes)"


def too_large(cap: int) -> APIError:
    return APIError(413, "payload_too_large", f"request body larger than {readable_bytes(cap)}")


def body_seconds(size: int, grace_s: float) -> float:
    """How long a body of ``size`` bytes may take to arrive: the grace, then the rate."""
    return grace_s + size / MIN_BODY_BYTES_PER_S


def too_slow(size: int, grace_s: float) -> APIError:
    return APIError(
        408,
        "body_timeout",
        f"the request body did not arrive within {body_seconds(size, grace_s):.0f} s "
        f"({grace_s:g} s, then at least {MIN_BODY_BYTES_PER_S // 1024} KiB/s)",
    )


@dataclass(frozen=True)
class RouteCaps:
    """The largest body each inference route accepts (bytes)."""

    multipart: int  # POST /predict, multipart/form-data
    raw: int  # POST /predict, the image as the body
    json: int  # the protocols' JSON: base64 images (pixel arrays are far smaller)
    binary: int  # Open Inference Protocol's binary tensor extension

    @classmethod
    def from_settings(cls, s: Settings) -> RouteCaps:
        files, upload, cap = s.max_files, s.max_upload_bytes, s.max_request_bytes
        base64_image = -(-upload // 3) * 4
        return cls(
            multipart=min(cap, files * (upload + PART_OVERHEAD) + BODY_OVERHEAD),
            raw=min(cap, upload),
            json=min(cap, files * (base64_image + PART_OVERHEAD) + BODY_OVERHEAD),
            binary=min(cap, files * (upload + 4) + BODY_OVERHEAD),
        )


async def read_body(request: Request, cap: int) -> bytes:
    """The request's body, at most ``cap`` bytes: 413 from a larger ``Content-Length`` before
    reading, or as soon as the stream passes ``cap``."""
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > cap:
        raise too_large(cap)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > cap:
            raise too_large(cap)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyBudget:
    """Bytes of request bodies held at once, all requests together (one event loop: no lock)."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit, self.held, self._metrics = limit, 0, metrics
        if metrics:  # read when scraped: setting a gauge takes a lock, twice a request
            metrics.bodies_held.set_function(lambda: self.held)

    def reserve(self, n: int) -> bool:
        if self.held + n > self.limit:
            if self._metrics:
                self._metrics.bodies_refused.inc()
            return False
        self.held += n
        return True

    def release(self, n: int) -> None:
        self.held -= n


def overloaded(budget: BodyBudget) -> APIError:
    return APIError(
        503,
        "overloaded",
        f"server busy: {budget.held} bytes of request bodies already held; retry shortly",
        {"Retry-After": "1"},
    )


# No route of these methods reads a body: one sent with them passes the limits (a GET is never
# answered 408, 413 or 503 for a body it did not need) and is never read; its answer carries
# ``Connection: close``, so that the server closes the connection instead of reading the rest
# into a request that has ended (uvicorn holds 64 KiB of it, and more in the socket's read
# buffer, while the route runs).
BODILESS_METHODS = ("GET", "HEAD")
CLOSE = (b"connection", b"close")


class BodyLimitMiddleware:
    """The request cap, the body budget and the body's deadline, for every request whose
    route may read a body (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, budget: BodyBudget, grace_s: float = 10.0
    ) -> None:
        self.app, self.max_bytes, self.budget, self.grace_s = app, max_bytes, budget, grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        declared = declared_length(length)  # (None: absent, or too many digits to be honest)
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and (length is None or declared == 0):  # no body to bound
            await self.app(scope, receive, send)
            return
        if scope["method"] in BODILESS_METHODS:
            await self.app(scope, receive, _closing(send))
            return
        waiting = headers.get(b"expect", b"").lower() == b"100-continue"  # has sent nothing
        expected = min(self.max_bytes if declared is None else declared, self.max_bytes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body_seconds(expected, self.grace_s)
        refusal = None
        if declared is not None and declared > self.max_bytes:
            refusal = too_large(self.max_bytes)
        elif declared is not None and not self.budget.reserve(declared):
            refusal = overloaded(self.budget)
        if refusal is not None:
            drained = not waiting and await _discard_rest(receive, deadline)
            await self._answer(refusal, scope, receive, send, close=not drained)
            return
        held = 0 if declared is None else declared
        received = 0
        complete = started = expired = False
        # The body's deadline: a timer that cancels the request's task, told apart from any
        # other cancellation below (as ``asyncio.timeout`` does it; 1.0 against 4.0 µs a
        # request, docs/benchmarks.md)
        task = asyncio.current_task()
        cancelling = task.cancelling()

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        body_deadline = loop.call_at(deadline, expire)

        async def limited_receive() -> Message:
            nonlocal received, held, complete, waiting
            waiting = False  # (uvicorn sends 100 Continue now: the client sends the body)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
                if received > held:  # no (or a false) Content-Length: reserve as it streams
                    if not self.budget.reserve(received - held):
                        raise overloaded(self.budget)
                    held = received
                if not message.get("more_body", False):
                    complete = True
                    body_deadline.cancel()  # all of it arrived in time
            return message

        async def discard_rest() -> bool:
            """The rest of a body nothing will read, discarded (``_discard_rest``); its share
            of the budget is released first: nothing of it is kept."""
            nonlocal held
            self.budget.release(held)
            held = 0
            return not waiting and await _discard_rest(receive, deadline)

        async def answering(message: Message) -> None:
            """An answer that starts before the body was read to its end (a route's refusal)
            waits for the rest, read and discarded, or closes the connection."""
            nonlocal started
            if message["type"] == "http.response.start" and not complete:
                body_deadline.cancel()  # (the discarding has the same deadline)
                if not await discard_rest():
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            started = True
            await send(message)

        timed_out = False
        try:
            try:
                await self.app(scope, limited_receive, answering)
            finally:  # the timer ends with the route, before anything below awaits
                body_deadline.cancel()
                # its cancellation taken back (as ``asyncio.timeout`` does), unless the task
                # was also cancelled from outside
                timed_out = expired and task.uncancel() <= cancelling
        except asyncio.CancelledError:  # the body did not arrive in time: whatever waited stopped
            if not timed_out:
                raise
            if not started:
                error = too_slow(expected, self.grace_s)
                await self._answer(error, scope, receive, send, close=True)
        except Exception:  # answered 500 by the safety net (which closes the connection)
            if not started and not complete:
                await discard_rest()  # so that the client sees the 500, not a reset
            raise
        finally:
            self.budget.release(held)

    async def _answer(
        self, error: APIError, scope: Scope, receive: Receive, send: Send, close: bool
    ) -> None:
        body = error_body(error.code, error.message, scope)
        headers = {**(error.headers or {}), **({"Connection": "close"} if close else {})}
        await JSONResponse(body, error.status_code, headers=headers)(scope, receive, send)


def _closing(send: Send) -> Send:
    """``send``, with ``Connection: close`` on the answer (to a request whose body nothing
    reads): the server closes the connection after it instead of reading the rest into a
    request that has ended, and a client trickling the body cannot keep it open."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
        await send(message)

    return sending


async def _discard_rest(receive: Receive, deadline: float) -> bool:
    """Read and discard the rest of a refused body (one chunk held at a time) until it ends
    or ``deadline`` passes; whether it ended. An answer sent while the client is still sending
    would reach it as a reset, not as the answer; once the body ended, the connection stays
    usable. Where it did not end (or the client waits for ``100 Continue``, having sent
    nothing), the answer carries ``Connection: close``: the server closes the connection after
    it rather than read the rest into a request that has ended."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                if not message.get("more_body", False):
                    return True
    return False


class PixelBudget:
    """Pixels being decoded at once, all requests together (decodes run in worker threads; a
    decode takes 3-8 bytes per pixel while it runs). A decode waits until its pixels fit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        n = min(pixels, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            with self._changed:
                self.used -= n
                self._changed.notify_all()
