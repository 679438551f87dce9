"""Dynamic micro-batching: concurrent requests share one model call.

Requests wait in a bounded deque; one asyncio task takes everything waiting (up to
``max_batch_size`` images, after at most ``max_wait_s`` for more to arrive), runs the model on
a single dedicated worker thread, and routes each slice of the result back to its request.
The event loop never blocks on TensorFlow, and while the model is busy the next batch fills
by itself, so batching costs nothing at low load and amortises the model under high load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.metrics import Metrics


class QueueFullError(Exception):
    """More images are waiting than the queue limit allows; the client should retry."""


class BatcherClosedError(Exception):
    """The server is shutting down and takes no new work."""


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_limit: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self._metrics = metrics
        self._waiting: deque[_Pending] = deque()
        self._waiting_images = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._closed = False
        self.ready = asyncio.Event()

    def start(self, warm_up: Callable[[], None] | None = None) -> None:
        """Start the worker; it runs ``warm_up`` on the inference thread first, then serves."""
        self._task = asyncio.create_task(self._run(warm_up), name="micro-batcher")

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for ``images`` (``[k, h, w, 3]`` uint8), computed in some batch."""
        if self._closed:
            raise BatcherClosedError("server is shutting down")
        if self._waiting_images + len(images) > self.queue_limit:
            if self._metrics:
                self._metrics.rejected.inc()
            raise QueueFullError(f"{self._waiting_images} images already waiting")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(images, future, time.perf_counter()))
        self._set_depth(self._waiting_images + len(images))
        self._wake.set()
        return await future

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish what is queued, stop the worker thread."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                self._task.cancel()
        for pending in self._waiting:
            if not pending.future.done():
                pending.future.set_exception(BatcherClosedError("server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _set_depth(self, value: int) -> None:
        self._waiting_images = value
        if self._metrics:
            self._metrics.queue_depth.set(value)

    async def _run(self, warm_up: Callable[[], None] | None) -> None:
        loop = asyncio.get_running_loop()
        if warm_up is not None:
            await loop.run_in_executor(self._executor, warm_up)
        self.ready.set()
        while True:
            while not self._waiting:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
            if self.max_wait_s > 0 and self._waiting_images < self.max_batch_size:
                await asyncio.sleep(self.max_wait_s)
            batch, n = [], 0
            while self._waiting and (
                not batch or n + len(self._waiting[0].images) <= self.max_batch_size
            ):
                pending = self._waiting.popleft()
                batch.append(pending)
                n += len(pending.images)
            self._set_depth(self._waiting_images - n)
            await self._execute(batch, loop)

    async def _execute(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        live = [p for p in batch if not p.future.done()]  # skip clients that went away
        if not live:
            return
        images = live[0].images if len(live) == 1 else np.concatenate([p.images for p in live])
        started = time.perf_counter()
        if self._metrics:
            for p in live:
                self._metrics.queue_wait.observe(started - p.enqueued)
            self._metrics.batch_size.observe(len(images))
        try:
            probs = await loop.run_in_executor(self._executor, self._predict, images)
        except Exception as exc:  # the model failed: every request in the batch learns why
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self._metrics:
            self._metrics.inference_time.observe(time.perf_counter() - started)
        offset = 0
        for p in live:
            k = len(p.images)
            if not p.future.done():
                p.future.set_result(probs[offset : offset + k])
            offset += k
