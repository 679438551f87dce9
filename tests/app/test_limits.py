"""Bodies and decodes bounded by design (``app.limits``): a cap per route from what it can
carry, a server-wide budget of body bytes (beyond it 503 with ``Retry-After``, the body read
first), a JSON body of more numbers than the images can hold refused before parsing, and a
budget of pixels being decoded at once. The real server's memory under a flood of the largest
requests is measured by ``tests/e2e/test_memory_bounds.py``."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.limits import BodyBudget, BodyLimitMiddleware, PixelBudget, RouteCaps, declared_length
from app.main import create_app
from tests.helpers import image_bytes, make_settings, wait_ready

PNG = image_bytes()
B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def limited(tiny_model_root):
    settings = make_settings(
        tiny_model_root,
        max_files=4,
        max_upload_bytes=200_000,
        max_request_bytes=2_000_000,
        max_buffered_bytes=3_000_000,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def test_each_route_caps_its_body_at_what_its_images_can_take():
    s = Settings(
        max_files=4,
        max_upload_bytes=200_000,
        max_request_bytes=2_000_000,
        max_buffered_bytes=3_000_000,
    )
    caps = RouteCaps.from_settings(s)
    assert caps.raw == 200_000
    assert caps.multipart == 4 * (200_000 + 1024) + 65536
    assert caps.json == 4 * (266_668 + 1024) + 65536  # base64: 4 characters per 3 bytes
    assert caps.binary == 4 * 200_004 + 65536
    assert RouteCaps.from_settings(Settings()).json == Settings().max_request_bytes  # capped


@pytest.mark.parametrize(
    "url,content_type,code",
    [
        ("/v2/models/tiny/infer", "application/json", None),
        ("/v1/models/tiny:predict", "application/json", None),
        ("/predict", "multipart/form-data; boundary=b", "payload_too_large"),
        ("/predict", "image/png", "file_too_large"),
    ],
)
def test_a_declared_length_over_the_routes_cap_is_413_before_reading(
    limited, url, content_type, code
):
    caps = RouteCaps.from_settings(limited.app.state.settings)
    cap = caps.raw if content_type == "image/png" else max(caps.json, caps.multipart)
    r = limited.post(
        url, content=b"{}", headers={"content-type": content_type, "content-length": str(cap + 1)}
    )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    if code is None:
        assert "larger than" in error  # the protocols' shape
    else:
        assert error["code"] == code


def test_a_body_the_budget_cannot_hold_is_read_then_answered_503(limited):
    budget = limited.app.state.body_budget
    assert budget.held == 0
    assert budget.reserve(budget.limit - 50)  # other requests hold nearly all of it
    try:
        refused = limited.post("/predict", files={"file": ("a.png", PNG, "image/png")})
        streamed = limited.post(  # no Content-Length: refused as it streams past the budget
            "/v1/models/tiny:predict",
            content=iter([b'{"instances": [{"b64": "', B64.encode(), b'"}]}']),
            headers={"content-type": "application/json"},
        )
    finally:
        budget.release(budget.limit - 50)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert streamed.status_code == 503 and "busy" in streamed.json()["error"]
    assert budget.held == 0  # every request's reservation released
    metrics = limited.get("/metrics").text
    assert "http_request_bodies_refused_total 2.0" in metrics
    assert limited.post("/predict", files={"file": ("a.png", PNG, "image/png")}).status_code == 200


def test_a_json_body_of_more_numbers_than_the_images_hold_is_refused_before_parsing(limited):
    numbers = b"[" + b"0," * 200_000 + b"0]"  # 400 KB: over the inline size, 200,001 values
    for url, body in (
        ("/v1/models/tiny:predict", b'{"instances": [' + numbers + b"]}"),
        (
            "/v2/models/tiny/infer",
            b'{"inputs": [{"name": "image", "shape": [1, 32, 32, 3], '
            b'"datatype": "UINT8", "data": ' + numbers + b"}]}",
        ),
    ):
        r = limited.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "values" in r.json()["error"], r.text


def test_a_few_images_over_the_limit_still_hear_how_many_they_sent(limited):
    pixels = [[[0, 0, 0]] * 32] * 32
    r = limited.post("/v1/models/tiny:predict", json={"instances": [pixels] * 5})
    assert r.status_code == 413 and "5 images sent" in r.json()["error"]


def test_decodes_wait_for_their_pixels_to_fit_the_budget():
    budget = PixelBudget(100)
    order = []
    first_in = threading.Event()

    def decode(name, pixels, hold_s):
        with budget.hold(pixels):
            order.append((name, "start", budget.used))
            first_in.set()
            time.sleep(hold_s)
            order.append((name, "end"))

    first = threading.Thread(target=decode, args=("large", 80, 0.2))
    first.start()
    first_in.wait(5)
    second = threading.Thread(target=decode, args=("next", 50, 0))
    huge = threading.Thread(target=decode, args=("huge", 10**9, 0))  # held as the whole budget
    second.start()
    second.join(5)
    huge.start()
    first.join(5)
    huge.join(5)
    assert order[:3] == [("large", "start", 80), ("large", "end"), ("next", "start", 50)]
    assert ("huge", "start", 100) in order and budget.used == 0


def test_content_length_is_read_strictly():
    assert declared_length(b"123") == 123 and declared_length("0") == 0
    for bad in (b"\xc2\xb2", "²", "-1", "1e3", " 12", "9" * 19, None):
        assert declared_length(bad) is None, bad


def test_budgets_that_cannot_hold_the_largest_request_are_refused(tiny_model_root):
    with pytest.raises(ValueError, match="max_buffered_bytes .* at least max_request_bytes"):
        make_settings(tiny_model_root, max_request_bytes=10_000_000, max_buffered_bytes=5_000_000)
    with pytest.raises(ValueError, match="max_request_bytes .* at least max_upload_bytes"):
        make_settings(tiny_model_root, max_upload_bytes=2_000_000, max_request_bytes=1_000_000)
    with pytest.raises(ValueError, match="max_decoding_pixels .* at least max_image_pixels"):
        make_settings(tiny_model_root, max_decoding_pixels=1000)


class _Sender:
    """An ASGI client sending ``chunks`` (the budget's holding noted at each read), and the
    messages the middleware sent back."""

    def __init__(self, chunks: list[bytes], budget: BodyBudget) -> None:
        self.chunks, self.budget = list(chunks), budget
        self.read, self.held_at_reads, self.sent = 0, [], []

    async def receive(self):
        self.held_at_reads.append(self.budget.held)
        if not self.chunks:
            return {"type": "http.disconnect"}
        self.read += 1
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message):
        self.sent.append(message)

    def headers(self) -> dict:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": "POST", "path": "/predict", "headers": headers}


def _refusing_app(reads: int):
    """An app that reads ``reads`` chunks of the body, then answers 413 without the rest."""

    async def app(scope, receive, send):
        for _ in range(reads):
            await receive()
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def _run_middleware(app, sender: _Sender, headers, budget: BodyBudget) -> None:
    import asyncio

    middleware = BodyLimitMiddleware(app, max_bytes=1000, budget=budget, grace_s=5)
    asyncio.run(middleware(_scope(headers), sender.receive, sender.send))


def test_a_refusal_before_the_body_ends_reads_the_rest_with_its_budget_released():
    budget = BodyBudget(10_000)
    sender = _Sender([b"a" * 100, b"b" * 100, b"c" * 100], budget)
    _run_middleware(_refusing_app(1), sender, [(b"content-length", b"300")], budget)
    assert sender.read == 3  # the rest read and discarded: the connection stays usable
    assert b"connection" not in sender.headers()
    assert sender.held_at_reads == [300, 0, 0] and budget.held == 0  # released before


def test_expect_100_continue_closes_only_while_the_client_has_sent_nothing():
    budget = BodyBudget(10_000)
    expect = [(b"content-length", b"300"), (b"expect", b"100-continue")]
    sender = _Sender([b"a" * 100, b"b" * 100, b"c" * 100], budget)
    _run_middleware(_refusing_app(0), sender, expect, budget)
    assert sender.read == 0 and sender.headers()[b"connection"] == b"close"
    sender = _Sender([b"a" * 100, b"b" * 100, b"c" * 100], budget)  # read once: 100 Continue
    _run_middleware(_refusing_app(1), sender, expect, budget)  # was sent, the body comes
    assert sender.read == 3 and b"connection" not in sender.headers()


def test_an_error_before_the_body_ends_reads_the_rest_then_reaches_the_safety_net():
    budget = BodyBudget(10_000)

    async def failing(scope, receive, send):
        await receive()
        raise RuntimeError("a bug")

    sender = _Sender([b"a" * 100, b"b" * 100], budget)
    with pytest.raises(RuntimeError):
        _run_middleware(failing, sender, [(b"content-length", b"200")], budget)
    assert sender.read == 2 and budget.held == 0


def test_a_content_length_too_long_to_parse_is_bounded_like_a_stream():
    """Over 18 digits the length is not believed, but a body it is: it is counted against the
    cap as it streams (httptools accepts up to 2**64 - 1)."""
    budget = BodyBudget(10_000)
    sender = _Sender([b"a" * 600, b"b" * 600], budget)
    seen = []

    async def reading(scope, receive, send):
        try:
            while (message := await receive())["more_body"]:
                seen.append(len(message["body"]))
        except Exception as exc:  # the middleware's 413, as the route sees it
            seen.append(type(exc).__name__)
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    _run_middleware(reading, sender, [(b"content-length", b"9" * 19)], budget)
    assert seen == [600, "APIError"] and budget.held == 0


def test_an_error_while_the_rest_of_the_body_never_comes_still_reaches_the_safety_net():
    """The route fails and the rest of the body never comes: the rest is waited for until the
    body's deadline, then the route's own error goes on (to the safety net's JSON 500), not a
    cancellation of the request (the deadline's timer ends with the route)."""
    import asyncio

    budget = BodyBudget(10_000)

    async def scenario():
        stalled = asyncio.Event()
        chunks = [b"a" * 100]

        async def receive():
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": True}
            await stalled.wait()  # the client sends nothing more

        async def failing(scope, receive, send):
            await receive()
            raise RuntimeError("a bug")

        async def send(message):
            raise AssertionError(f"nothing is sent here: {message}")

        middleware = BodyLimitMiddleware(failing, max_bytes=1000, budget=budget, grace_s=0.2)
        try:
            await middleware(_scope([(b"content-length", b"200")]), receive, send)
        except BaseException as exc:  # (CancelledError included)
            return exc, asyncio.current_task().cancelling()
        return None, asyncio.current_task().cancelling()

    error, cancelling = asyncio.run(scenario())
    assert isinstance(error, RuntimeError), repr(error)
    assert cancelling == 0 and budget.held == 0
