"""Micro-batching: concurrent requests share model calls and get the answers they would alone."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.batching import BatcherClosedError, MicroBatcher, ModelFailedError, QueueFullError
from app.main import create_app
from tests.helpers import image_bytes, make_settings, wait_ready


class GatedSum:
    """A model stand-in that sums pixels per image and records each batch size. With
    ``gated``, each call waits until the test opens the gate, so a test decides when a batch
    ends instead of guessing with sleeps."""

    def __init__(self, gated: bool = False):
        self.batches: list[int] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.called = threading.Condition(self.lock)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(len(images))
            self.called.notify_all()
        assert self.gate.wait(10), "the test never opened the gate"
        return images.reshape(len(images), -1).sum(axis=1, keepdims=True).astype(np.float32)

    def wait_for_calls(self, n: int, timeout: float = 10) -> bool:
        """Block until ``n`` calls have started (any thread, even a blocked event loop)."""
        with self.lock:
            return self.called.wait_for(lambda: len(self.batches) >= n, timeout)


async def calls_started(model: GatedSum, n: int) -> None:
    assert await asyncio.to_thread(model.wait_for_calls, n), f"{n} model calls never started"


def run(coro):
    return asyncio.run(coro)


@asynccontextmanager
async def running(predict, **limits):
    """A started, warmed-up batcher, closed on exit."""
    b = MicroBatcher(predict, **limits)
    b.start()
    await b.ready.wait()
    try:
        yield b
    finally:
        await b.close()


def test_concurrent_submissions_are_batched_and_routed_back():
    model = GatedSum(gated=True)

    async def scenario():
        async with running(model, max_batch_size=8, max_wait_s=0, queue_limit=100) as b:
            inputs = [np.full((1, 2, 2, 3), i, np.uint8) for i in range(20)]
            first = asyncio.create_task(b.submit(inputs[0]))
            await calls_started(model, 1)  # the model is busy with the first image
            rest = [asyncio.create_task(b.submit(x)) for x in inputs[1:]]
            await asyncio.sleep(0)  # all 19 are queued
            model.gate.set()
            return inputs, await asyncio.gather(first, *rest)

    inputs, results = run(scenario())
    for x, r in zip(inputs, results, strict=True):
        assert r.shape == (1, 1) and r[0, 0] == x.sum()
    assert model.batches == [1, 8, 8, 3]  # what waited while the model was busy, up to the cap


def test_queue_limit_refuses_instead_of_growing():
    model = GatedSum(gated=True)

    async def scenario():
        async with running(model, max_batch_size=2, max_wait_s=0, queue_limit=3) as b:
            first = asyncio.create_task(b.submit(np.zeros((2, 1, 1, 3), np.uint8)))
            await calls_started(model, 1)  # first batch is now running; the queue is empty
            waiting = [
                asyncio.create_task(b.submit(np.zeros((1, 1, 1, 3), np.uint8))) for _ in range(3)
            ]
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError):
                await b.submit(np.zeros((1, 1, 1, 3), np.uint8))
            model.gate.set()
            return await asyncio.gather(first, *waiting)

    assert len(run(scenario())) == 4


def test_close_finishes_queued_work_then_refuses_new():
    model = GatedSum()

    async def scenario():
        async with running(model, max_batch_size=1, max_wait_s=0, queue_limit=10) as b:
            pending = [
                asyncio.create_task(b.submit(np.ones((1, 1, 1, 3), np.uint8))) for _ in range(4)
            ]
            await asyncio.sleep(0)
            await b.close()
            with pytest.raises(BatcherClosedError):
                await b.submit(np.ones((1, 1, 1, 3), np.uint8))
            return await asyncio.gather(*pending)

    assert [float(r[0, 0]) for r in run(scenario())] == [3.0] * 4


def test_model_failure_reaches_every_request_in_the_batch():
    def broken(images):
        raise RuntimeError("model exploded")

    async def scenario():
        async with running(broken, max_batch_size=4, max_wait_s=0.01, queue_limit=10) as b:
            return await asyncio.gather(
                *(b.submit(np.zeros((1, 1, 1, 3), np.uint8)) for _ in range(3)),
                return_exceptions=True,
            )

    assert all(isinstance(o, RuntimeError) for o in run(scenario()))


def test_concurrent_http_requests_match_sequential_answers(client):
    concurrent_answers_match_sequential_ones(client)


def test_a_two_stream_server_answers_as_one_stream(tiny_model_root):
    settings = make_settings(tiny_model_root, runtime="openvino", inference_streams=2)
    with TestClient(create_app(settings)) as two_streams:
        wait_ready(two_streams)
        assert two_streams.get("/model").json()["served"]["streams"] == 2
        names = {t.name for t in threading.enumerate()}
        assert {"inference", "inference-2"} <= names
        concurrent_answers_match_sequential_ones(two_streams)


def concurrent_answers_match_sequential_ones(client) -> None:
    payloads = [image_bytes(color=(25 * i, 255 - 25 * i, 90)) for i in range(8)]
    sequential = [
        client.post("/predict", files={"file": ("x.png", p, "image/png")}).json()["probabilities"]
        for p in payloads
    ]
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda p: client.post("/predict", files={"file": ("x.png", p, "image/png")}),
                payloads,
            )
        )
    for r, expected in zip(responses, sequential, strict=True):
        assert r.status_code == 200
        assert r.json()["probabilities"] == pytest.approx(expected, abs=1e-5)


def test_the_model_does_not_wait_for_a_busy_event_loop():
    """The inference thread picks its next batch itself: queued work runs while the loop is
    blocked, and the results arrive once it is free."""
    model = GatedSum()

    async def scenario():
        async with running(model, max_batch_size=1, max_wait_s=0, queue_limit=10) as b:
            pending = [
                asyncio.create_task(b.submit(np.full((1, 1, 1, 3), i, np.uint8))) for i in range(4)
            ]
            await asyncio.sleep(0)  # all four are queued
            # Block the event loop (no callback, no task runs) until all four calls have run.
            all_ran_while_blocked = model.wait_for_calls(4)
            return all_ran_while_blocked, await asyncio.gather(*pending)

    all_ran_while_blocked, results = run(scenario())
    assert all_ran_while_blocked
    assert [float(r[0, 0]) for r in results] == [0.0, 3.0, 6.0, 9.0]


def test_failed_warm_up_leaves_it_unready_and_refuses_work():
    def warm_up():
        raise RuntimeError("no memory for the model")

    async def scenario():
        b = MicroBatcher(GatedSum(), max_batch_size=4, max_wait_s=0, queue_limit=10)
        b.start(warm_up)
        await asyncio.wait_for(b.settled.wait(), 10)
        try:
            with pytest.raises(ModelFailedError) as refused:
                await b.submit(np.zeros((1, 1, 1, 3), np.uint8))
            return b.ready.is_set(), str(refused.value), b.failure
        finally:
            await b.close()

    ready, message, failure = run(scenario())
    assert not ready and "warm up" in message
    assert failure == "the model failed to warm up: RuntimeError: no memory for the model"


def test_one_thread_per_stream_computes_batches_at_once():
    """With two workers (a runtime with two streams), two batches run at the same time; with
    one, the second waits for the first."""
    for workers, started_together in ((2, 2), (1, 1)):
        model = GatedSum(gated=True)

        async def scenario(workers=workers, model=model, started_together=started_together):
            async with running(
                model, max_batch_size=2, max_wait_s=0, queue_limit=10, workers=workers
            ) as b:
                inputs = [np.full((2, 1, 1, 3), i, np.uint8) for i in range(3)]
                tasks = [asyncio.create_task(b.submit(x)) for x in inputs]
                await calls_started(model, started_together)
                await asyncio.sleep(0.05)  # time for a call that should not start to start
                with model.lock:
                    running_at_once = len(model.batches)
                model.gate.set()
                return running_at_once, inputs, await asyncio.gather(*tasks)

        running_at_once, inputs, results = run(scenario())
        assert running_at_once == started_together
        for x, r in zip(inputs, results, strict=True):
            assert r[:, 0].tolist() == [x[0].sum()] * 2
        assert sorted(model.batches) == [2, 2, 2]


def test_every_worker_waits_for_the_warm_up_and_stops_on_close():
    model = GatedSum()
    order = []

    def warm_up():
        order.append(("warm-up", threading.current_thread().name))

    async def scenario():
        b = MicroBatcher(model, max_batch_size=1, max_wait_s=0, queue_limit=10, workers=3)
        b.start(warm_up)
        await b.ready.wait()
        queued = [asyncio.create_task(b.submit(np.ones((1, 1, 1, 3), np.uint8))) for _ in range(6)]
        await asyncio.sleep(0)
        names = sorted(t.name for t in b._threads)
        await b.close()
        return names, [t.is_alive() for t in b._threads], await asyncio.gather(*queued)

    names, alive, results = run(scenario())
    assert order == [("warm-up", "inference")]
    assert names == ["inference", "inference-2", "inference-3"]
    assert alive == [False, False, False]  # close stopped every thread
    assert [float(r[0, 0]) for r in results] == [3.0] * 6  # and they finished the queue first


def test_a_failed_warm_up_stops_every_worker():
    def warm_up():
        raise RuntimeError("no memory for the model")

    async def scenario():
        b = MicroBatcher(GatedSum(), max_batch_size=4, max_wait_s=0, queue_limit=10, workers=2)
        b.start(warm_up)
        await asyncio.wait_for(b.settled.wait(), 10)
        for t in b._threads:
            await asyncio.to_thread(t.join, 10)
        return b.ready.is_set(), [t.is_alive() for t in b._threads]

    assert run(scenario()) == (False, [False, False])
