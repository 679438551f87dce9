"""``app.ray_proxy.RetryLostReplica`` on its own (no Ray needed): the proxy's way of failing a
request whose replica was lost is to start no answer; the middleware then sends the request
again with its kept body, and answers 503 with Retry-After, in the path's protocol shape, what
it cannot (a second loss, a body it did not keep). The live cluster's faults:
``tests/e2e/test_ray_serve.py``."""

from __future__ import annotations

import asyncio
import json

from app.limits import BodyBudget
from app.ray_proxy import LOST_MESSAGE, RetryLostReplica, middlewares


class Proxy:
    """A stand-in for Serve's proxy: loses the first ``losses`` requests (reads the body, then
    returns without answering, as Serve's proxy does on a lost replica), then echoes the body."""

    def __init__(self, losses: int) -> None:
        self.losses, self.bodies = losses, []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        if len(self.bodies) <= self.losses:
            return  # no answer started: a lost replica
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _call(app, path: str, chunks: list[bytes], headers: list | None = None):
    """The app's answer to one request whose body arrives in ``chunks``: (status, headers,
    body)."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    length = sum(map(len, chunks))
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers
        if headers is not None
        else [(b"content-length", str(length).encode()), (b"x-request-id", b"abc")],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_a_request_whose_replica_was_lost_is_sent_again_with_its_whole_body():
    proxy = Proxy(losses=1)
    status, _, body = _call(RetryLostReplica(proxy), "/predict", [b"part one, ", b"part two"])
    assert status == 200 and body == b"part one, part two"
    assert proxy.bodies == [b"part one, part two"] * 2


def test_two_losses_are_answered_503_with_retry_after_in_the_paths_shape():
    for path, expected in (
        ("/predict", {"error": {"code": "replica_lost", "message": LOST_MESSAGE}}),
        ("/v2/models/m/infer", {"error": LOST_MESSAGE}),
        ("/v1/models/m:predict", {"error": LOST_MESSAGE}),
    ):
        proxy = Proxy(losses=2)
        status, headers, body = _call(RetryLostReplica(proxy), path, [b"x"])
        assert status == 503 and json.loads(body) == expected
        assert headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"abc"
        assert len(proxy.bodies) == 2


def test_a_body_too_large_to_keep_is_sent_once_and_its_loss_answered_503():
    proxy = Proxy(losses=1)
    status, _, _ = _call(RetryLostReplica(proxy, max_body=4), "/predict", [b"12345"])
    assert status == 503 and len(proxy.bodies) == 1
    # a chunked body that grows past the limit: what was kept, then the rest, reach the proxy
    proxy = Proxy(losses=0)
    chunked = [(b"transfer-encoding", b"chunked")]
    status, _, body = _call(RetryLostReplica(proxy, max_body=4), "/p", [b"123", b"456"], chunked)
    assert status == 200 and body == b"123456"


def test_the_budget_of_kept_bodies_is_shared_and_released():
    budget = BodyBudget(10)
    budget.reserve(8)  # other requests hold most of it
    proxy = Proxy(losses=1)
    status, _, _ = _call(RetryLostReplica(proxy, budget=budget), "/predict", [b"12345"])
    assert status == 503 and len(proxy.bodies) == 1  # not kept: no second try
    budget.release(8)
    proxy = Proxy(losses=1)
    status, _, _ = _call(RetryLostReplica(proxy, budget=budget), "/predict", [b"12345"])
    assert status == 200 and budget.held == 0


def test_what_the_proxy_loads_is_the_middleware():
    (middleware,) = middlewares()
    assert middleware.cls is RetryLostReplica


def test_a_client_that_left_is_neither_retried_nor_answered():
    async def leaving(scope, receive, send):
        assert (await receive())["type"] == "http.disconnect"  # the client is gone

    calls = []

    async def proxy(scope, receive, send):
        calls.append(1)
        await leaving(scope, receive, send)

    messages = [{"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(RetryLostReplica(proxy)(scope, receive, send))
    assert calls == [1] and sent == []


def test_the_rest_of_a_body_the_lost_replica_had_not_read_is_read_before_the_second_try():
    bodies = []

    async def proxy(scope, receive, send):
        message = await receive()
        bodies.append(message["body"])
        if len(bodies) == 1:
            return  # lost after the first chunk
        while message.get("more_body"):
            message = await receive()
            bodies[-1] += message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bodies[-1]})

    status, _, body = _call(RetryLostReplica(proxy), "/predict", [b"one ", b"two ", b"three"])
    assert status == 200 and body == b"one two three"


def test_each_try_has_its_own_scope_and_the_second_keeps_the_first_ones_request_id():
    """Serve's proxy rewrites the path of the scope it is given (the route prefix moved to
    root_path) and adds its request id to the headers: the second try must see the original
    path, and the same id."""
    seen = []

    async def proxy(scope, receive, send):
        seen.append((scope["path"], dict(scope["headers"]).get(b"x-request-id")))
        if len(seen) == 1:
            scope["headers"].append((b"x-request-id", b"serve-id"))
            scope["path"], scope["root_path"] = "/predict", "/api"  # as Serve's proxy does
            while (await receive()).get("more_body"):
                pass
            return  # lost
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    status, _, _ = _call(RetryLostReplica(proxy), "/api/predict", [b"x"], [])
    assert status == 200
    assert seen == [("/api/predict", None), ("/api/predict", b"serve-id")]
