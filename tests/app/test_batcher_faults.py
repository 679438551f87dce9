"""Faults inside the batcher never leave a request waiting: a fault outside the model call fails
its batch and the thread serves on; a thread that dies fails its batch, refuses new work and
turns readiness and liveness off; a stalled model answers 504 within the request timeout and
turns readiness off; no model call exceeds ``max_batch_size``; a request that names a version is
answered by that version or refused."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.batching import (
    InferenceFailedError,
    InferenceTimeoutError,
    MicroBatcher,
    ModelFailedError,
    VersionReplacedError,
)
from app.main import create_app
from app.metrics import Metrics
from tests.app.test_batching import GatedSum, calls_started, run, running
from tests.helpers import documented_error, image_bytes, make_settings, until, wait_ready

PNG = image_bytes()


class ThreadKill(BaseException):
    """Not an ``Exception``: no ``except Exception`` catches it, so it ends the thread, as a
    fault inside a native library or an interpreter shutdown would."""


def one(value: int = 1, size: int = 2) -> np.ndarray:
    return np.full((1, size, size, 3), value, np.uint8)


def test_a_fault_outside_the_model_call_fails_its_batch_and_the_thread_serves_on():
    """Two images of different sizes in one batch cannot be concatenated: before the catch-all
    that ``ValueError`` ended the thread and every later request waited forever."""
    model = GatedSum(gated=True)

    async def scenario():
        async with running(model, max_batch_size=8, max_wait_s=0, queue_limit=10) as b:
            first = asyncio.create_task(b.submit(one(0)))
            await calls_started(model, 1)  # the model is busy; the next two queue together
            mixed = [
                asyncio.create_task(b.submit(one(1, 2))),
                asyncio.create_task(b.submit(one(1, 3))),
            ]
            await asyncio.sleep(0)
            model.gate.set()
            failed = await asyncio.gather(*mixed, return_exceptions=True)
            after = await asyncio.wait_for(b.submit(one(2)), 5)
            return await first, failed, after, b.health()

    first, failed, after, health = run(scenario())
    assert float(first[0, 0]) == 0.0
    assert all(isinstance(f, ValueError) for f in failed), failed
    assert float(after[0, 0]) == 2 * 12  # served after the fault
    assert health is None


def test_a_dead_inference_thread_fails_its_batch_refuses_work_and_is_reported():
    metrics = Metrics()

    def killed(images):
        raise ThreadKill("killed")

    async def scenario():
        b = MicroBatcher(killed, max_batch_size=4, max_wait_s=0, queue_limit=10, metrics=metrics)
        b.start()
        await b.ready.wait()
        alive_before = metrics.registry.get_sample_value("inference_threads_alive")
        try:
            with pytest.raises(InferenceFailedError):
                await asyncio.wait_for(b.submit(one()), 5)
            await asyncio.to_thread(b._threads[0].join, 5)
            with pytest.raises(ModelFailedError) as refused:
                await b.submit(one())
            return alive_before, str(refused.value), b.health(), b.dead
        finally:
            await b.close(timeout=1)

    alive_before, refused, health, dead = run(scenario())
    assert alive_before == 1 and metrics.registry.get_sample_value("inference_threads_alive") == 0
    assert refused == health == dead == "no inference thread is running"


def test_a_stalled_model_times_requests_out_and_is_reported():
    model = GatedSum(gated=True)

    async def scenario():
        async with running(model, max_batch_size=4, max_wait_s=0, queue_limit=10, stall_s=0.2) as b:
            with pytest.raises(InferenceTimeoutError, match="within 0.3 s"):
                await b.submit_tagged(one(), timeout=0.3)
            stalled, alive = b.health(), b.hung()
            await asyncio.sleep(4 * 0.2)  # four times the stall limit: hung
            hung = b.hung()
            model.gate.set()
            await asyncio.wait_for(b.submit(one()), 5)
            return stalled, alive, hung, b.health(), b.hung()

    stalled, alive, hung, recovered, alive_again = run(scenario())
    assert stalled is not None and "model call has been running" in stalled
    assert alive is None  # not ready, but not yet taken for hung
    assert hung is not None and "model call has been running" in hung
    assert recovered is None and alive_again is None


def test_no_model_call_exceeds_max_batch_size():
    model = GatedSum()

    async def scenario():
        async with running(model, max_batch_size=2, max_wait_s=0, queue_limit=10) as b:
            images = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(5)])
            return images, await b.submit(images)

    images, probs = run(scenario())
    assert model.batches == [2, 2, 1]
    assert probs[:, 0].tolist() == images.reshape(5, -1).sum(axis=1).tolist()


def test_a_request_for_a_replaced_version_is_refused_not_answered_by_another():
    model = GatedSum(gated=True)
    old, new = object(), object()

    async def scenario():
        async with running(model, max_batch_size=1, max_wait_s=0, queue_limit=10) as b:
            b.swap(model, old)
            busy = asyncio.create_task(b.submit(one(0)))
            await calls_started(model, 1)
            pinned = asyncio.create_task(b.submit_tagged(one(1), want=old))
            unpinned = asyncio.create_task(b.submit_tagged(one(2)))
            await asyncio.sleep(0)
            b.swap(model, new)  # a reload, while both wait
            model.gate.set()
            await busy
            return await asyncio.gather(pinned, unpinned, return_exceptions=True)

    pinned, unpinned = run(scenario())
    assert isinstance(pinned, VersionReplacedError)
    assert unpinned[1] is not None and float(unpinned[0][0, 0]) == 2 * 12


# --- the same faults seen through HTTP ---------------------------------------------------


@pytest.fixture
def fresh_client(tiny_model_root):
    """An app of its own: these tests break its batcher."""
    app = create_app(make_settings(tiny_model_root, request_timeout_s=0.5))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def _predict(client):
    return client.post("/predict", files={"file": ("a.png", PNG, "image/png")})


def test_http_a_dead_thread_turns_readiness_and_liveness_off(fresh_client):
    c = fresh_client
    batcher, model = c.app.state.batcher, c.app.state.model

    def killed(images):
        raise ThreadKill("killed")

    batcher.swap(killed, model)
    r = _predict(c)
    for t in batcher._threads:
        t.join(5)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "inference_failed"
    refused = _predict(c)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_failed"
    ready = c.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    assert c.get("/v2/health/ready").status_code == 503
    assert c.get("/health").status_code == 503 and c.get("/v2/health/live").status_code == 503
    assert "inference_threads_alive 0.0" in c.get("/metrics").text


def test_http_a_stalled_model_answers_504_and_readiness_fails_until_it_recovers(fresh_client):
    c = fresh_client
    batcher, model = c.app.state.batcher, c.app.state.model
    gate = threading.Event()

    def stalled(images):
        gate.wait(10)
        return model.predict(images)

    batcher.swap(stalled, model)
    try:
        r = _predict(c)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "inference_timeout" and r.headers["retry-after"]
        document = c.get("/openapi.json").json()
        assert r.json() == documented_error(document, "post", "/predict", 504)
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert c.get("/health").status_code == 200  # alive: the call may still end
        assert "inference_timeouts_total 1.0" in c.get("/metrics").text
    finally:
        gate.set()
        batcher.swap(model.predict, model)
    wait_ready(c, timeout=10)
    assert _predict(c).status_code == 200


def test_http_a_pinned_version_replaced_while_waiting_is_503(fresh_client):
    c = fresh_client
    batcher, model = c.app.state.batcher, c.app.state.model
    gate = threading.Event()

    def gated(images):
        gate.wait(10)
        return model.predict(images)

    pinned_url = f"/v1/models/{model.name}/versions/{model.version}:predict"
    answers = {}

    def send(key, **request):
        answers[key] = c.post(**request)

    batcher.swap(gated, model)  # computes as the served model, once the gate opens
    busy = threading.Thread(
        target=send,
        args=("busy",),
        kwargs={"url": "/predict", "files": {"file": ("a.png", PNG, "image/png")}},
    )
    pinned = threading.Thread(
        target=send,
        args=("pinned",),
        kwargs={"url": pinned_url, "json": {"instances": [np.zeros((32, 32, 3), int).tolist()]}},
    )
    try:
        busy.start()
        until(lambda: batcher._calls)  # the model is busy with the first request
        pinned.start()
        until(lambda: batcher._waiting_images == 1)  # the pinned one waits its turn
        batcher.swap(model.predict, object())  # a reload: another model serves from now on
    finally:
        gate.set()
        busy.join(10)
        pinned.join(10)
        batcher.swap(model.predict, model)
    assert answers["busy"].status_code == 200
    r = answers["pinned"]
    assert r.status_code == 503, r.text
    assert "replaced" in r.json()["error"]


class Body(bytearray):
    """A request's body: weakly referable, so a test sees when it is freed."""


async def _request(b: MicroBatcher, bodies: list, images: list, **kwargs) -> str:
    """A request's frames as a route's: its body in a local while it waits for the model."""
    body, pixels = Body(1024), one()
    bodies.append(weakref.ref(body))
    images.append(weakref.ref(pixels))
    try:
        await b.submit_tagged(pixels, **kwargs)
    except Exception as exc:
        return type(exc).__name__
    return "answered"


def _alive(refs: list) -> int:
    return sum(r() is not None for r in refs)


async def _eventually(condition, timeout: float = 2.0) -> bool:
    """Whether ``condition()`` holds within ``timeout`` (the inference thread may still be
    between handing an answer over and taking its next batch)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return condition()


def test_a_failed_request_leaves_nothing_holding_its_body_or_images():
    """A request refused by a timeout (its images still queued behind a stalled model) or by a
    failed batch (one error for all its requests, chained to another as a runtime's are) is
    freed by reference counts when it ends, its body with it, however seldom the cyclic
    collector runs (``app.memory``); its images and what the failed model call held once the
    idle inference thread has handed the answer over. The future holds the error as a value
    (``batching._Failed``), a detached copy without traceback or chained errors: raised as is
    into each request, its traceback would hold the request's frames, from the queue or in a
    cycle with the frame that awaited it; and the tracebacks of the model's error and of those
    chained to it hold, through their frames' callers, the batch's futures."""
    model = GatedSum(gated=True)
    bodies, images, in_model = [], [], []

    def failing(batch):
        partial = batch.astype(np.float32)  # what a model's frame holds
        in_model.append(weakref.ref(partial))
        try:
            raise KeyError("a runtime's own error")
        except KeyError:
            raise ValueError("the model failed") from None  # (its context stays)

    async def scenario():
        async with running(model, max_batch_size=4, max_wait_s=0.05, queue_limit=20) as b:
            stalled = asyncio.create_task(b.submit(np.zeros((4, 2, 2, 3), np.uint8)))
            await calls_started(model, 1)
            gc.disable()
            timed_out = [await _request(b, bodies, images, timeout=0.05) for _ in range(3)]
            bodies_after_timeouts = _alive(bodies)  # (their images wait in the queue)
            model.gate.set()
            await stalled
            b.swap(failing)
            failed = await asyncio.gather(*(_request(b, bodies, images) for _ in range(3)))
            bodies_after_failures = _alive(bodies)
            # the thread idle after the failed batch, holding none of it
            freed = await _eventually(lambda: _alive(images) == _alive(in_model) == 0)
            return timed_out, bodies_after_timeouts, failed, bodies_after_failures, freed

    try:
        timed_out, bodies_after_timeouts, failed, bodies_after_failures, freed = run(scenario())
    finally:
        gc.enable()
    assert timed_out == ["InferenceTimeoutError"] * 3
    assert bodies_after_timeouts == 0
    assert failed == ["ValueError"] * 3 and len(in_model) >= 1
    assert bodies_after_failures == 0
    assert freed, f"{_alive(images)} images, {_alive(in_model)} model arrays still held"


def test_each_request_raises_its_own_error_caused_by_the_batchs():
    """A failed batch's requests each raise a new error of the model's kind (its attributes,
    its message formatted once), caused by one detached copy of the model's own, which carries
    the model call's traceback as text (the safety net logs it with each request's id)."""

    class ModelError(Exception):
        def __init__(self, code: int, detail: str) -> None:
            super().__init__(f"model error {code}: {detail}")
            self.code = code

    def failing(images):
        raise ModelError(7, "out of memory")

    async def scenario():  # (the thread takes the batch once all three wait)
        async with running(failing, max_batch_size=3, max_wait_s=5, queue_limit=10) as b:
            requests = (b.submit(one()) for _ in range(3))
            return await asyncio.gather(*requests, return_exceptions=True)

    errors = run(scenario())
    assert all(type(e) is ModelError for e in errors), errors
    assert all(str(e) == "model error 7: out of memory" and e.code == 7 for e in errors)
    assert len({id(e) for e in errors}) == 3  # one each
    assert len({id(e.__cause__) for e in errors}) == 1  # the batch's one error
    cause = errors[0].__cause__
    assert cause.__traceback__ is None and cause.__cause__ is None and cause.__context__ is None
    assert "in failing" in cause.__notes__[0] and "out of memory" in cause.__notes__[0]
    assert not hasattr(errors[0], "__notes__")  # (the traceback once per request's log)


def test_an_error_that_cannot_be_copied_is_raised_as_a_runtime_error_naming_it():
    """An error whose copy would not say the same (state kept outside its arguments) reaches
    each request as a ``RuntimeError`` naming it: unmapped, so answered and logged by the
    safety net as the original would have been."""

    def failing(images):
        raise FileNotFoundError(2, "No such file", "weights.bin")

    async def scenario():
        async with running(failing, max_batch_size=1, max_wait_s=0, queue_limit=10) as b:
            return await asyncio.gather(b.submit(one()), return_exceptions=True)

    (error,) = run(scenario())
    assert type(error) is RuntimeError
    assert str(error) == "FileNotFoundError: [Errno 2] No such file: 'weights.bin'"
