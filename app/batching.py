"""Dynamic micro-batching: concurrent requests share one model call.

Requests wait in a bounded queue; a dedicated inference thread takes everything waiting (up
to ``max_batch_size`` images, after at most ``max_wait_s`` for more to arrive), runs the model,
and hands each slice of the result back to its request on the event loop. The thread picks its
next batch itself as soon as a call ends, so the model never waits for a busy event loop, and
the event loop never blocks on the model (it only takes a lock that the thread holds for a few
list operations). While the model is busy the next batch fills by itself, so batching costs
nothing at low load and amortises the model under high load. A runtime that computes several
batches at once (``workers``: its streams) gets one such thread per stream, each taking the
next batch as soon as its own call ends.

Faults stay inside the batch they hit: a model call that raises fails that batch's requests
with its exception, and so does any other fault while a batch is computed or handed back, after
which the thread takes the next batch; a fault that ends a thread fails its batch with
``InferenceFailedError``. A request waits at most its ``timeout``
(``InferenceTimeoutError``); ``health`` says why the batcher cannot serve (no inference thread
alive, or a model call running longer than ``stall_s``), which readiness reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.metrics import Metrics

log = logging.getLogger(__name__)

# A model call running this many times the stall limit is taken for hung: liveness fails, so
# that an orchestrator restarts the process (readiness failed long before).
HUNG_STALLS = 4


class QueueFullError(Exception):
    """More images are waiting than the queue limit allows; the client should retry."""


class BatcherClosedError(Exception):
    """The server is shutting down (or the model failed to warm up) and takes no new work."""


class ModelFailedError(BatcherClosedError):
    """The model failed its warm-up, or every inference thread stopped: this batcher will
    never serve."""


class InferenceFailedError(Exception):
    """The inference thread computing this request's batch stopped."""


class InferenceTimeoutError(Exception):
    """The request's images were not computed within its deadline (the model is stalled or
    far behind)."""


class VersionReplacedError(Exception):
    """The request named a model version that a reload replaced before its images ran."""


@dataclass
class _Failed:
    """What a request's future holds when its images will not be computed: the error, as a
    value. Set as the future's exception, it would be raised as is into the request, and its
    traceback would then hold the request's frames (its body, its images) for as long as the
    future lives: in the queue behind a stalled model, or in a reference cycle with the frame
    that awaited it (one error is shared by a whole batch, and would gather every request's
    frames). ``submit_tagged`` raises a new one of its kind, caused by it."""

    error: BaseException


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float
    want: object = None  # the tag (model) that must compute it; None: whichever serves


class MicroBatcher:
    """Runs ``predict`` on batches of the images that requests ``submit``, in ``workers``
    threads (one call each at a time).

    ``start`` (on the event loop) starts the inference threads; the first runs the warm-up;
    ``ready`` is set when it succeeded, ``settled`` when it ended either way (``failure`` then
    says why it did not succeed). ``submit`` raises ``QueueFullError`` beyond ``queue_limit``
    waiting images and ``BatcherClosedError`` (``ModelFailedError`` after a failed warm-up)
    once no new work is taken; ``close`` drains the queue and stops the thread. ``predict``
    may be any callable from uint8 ``[n, h, w, 3]`` to ``[n, classes]``: the batcher does not
    know which runtime serves.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_limit: int,
        metrics: Metrics | None = None,
        workers: int = 1,
        stall_s: float | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._predict = predict
        self._tag: object = None  # what computed a batch (the served model), see ``swap``
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self._metrics = metrics
        self._waiting: deque[_Pending] = deque()
        self._waiting_images = 0
        self._changed = threading.Condition()  # guards _waiting, _waiting_images, _closed
        self._closed: str | None = None  # why new work is refused
        self.failure: str | None = None  # why the model will never serve
        self.dead: str | None = None  # set when every inference thread stopped by a fault
        self._loop: asyncio.AbstractEventLoop | None = None
        self.workers = workers
        self.stall_s = stall_s
        self._threads: list[threading.Thread] = []
        self._alive = 0  # inference threads serving (guarded by the lock)
        self._calls: dict[str, float] = {}  # thread name -> when its running model call began
        self._warmed = threading.Event()  # the warm-up ended, either way
        self._warm_up: Callable[[], None] | None = None
        self.ready = asyncio.Event()  # set once the warm-up succeeded
        self.settled = asyncio.Event()  # set once the warm-up ended, either way

    def start(self, warm_up: Callable[[], None] | None = None) -> None:
        """Start the inference threads (``inference``, ``inference-2``, ...): the first runs
        ``warm_up``, the others wait for it; then all serve."""
        self._loop = asyncio.get_running_loop()
        # Handed over through an attribute the thread clears, not the thread's args (which
        # live as long as the thread): the warm-up may refer to a model a reload must free.
        self._warm_up = warm_up
        self._start_thread(self._work, "inference")
        for i in range(2, self.workers + 1):
            self._start_thread(self._serve_after_warm_up, f"inference-{i}")

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._run_thread, args=(target,), name=name, daemon=True)
        self._threads.append(thread)
        with self._changed:
            self._alive += 1
            self._set_alive_metric()
        thread.start()

    def _run_thread(self, target: Callable[[], None]) -> None:
        """Run ``target``; when the last thread ends while work is still taken (a fault no
        handler caught), refuse new work and fail what waits, so nothing waits forever."""
        try:
            target()
        except BaseException:  # the thread ends here; say so once, with the traceback
            log.critical(
                "inference thread %s stopped", threading.current_thread().name, exc_info=True
            )
        finally:
            with self._changed:
                self._alive -= 1
                self._set_alive_metric()
                self._calls.pop(threading.current_thread().name, None)
                died = self._alive == 0 and not self._closed
                if died:
                    self._closed = self.failure = self.dead = "no inference thread is running"
            if died:
                self._to_loop(self._fail_all_waiting)

    def _set_alive_metric(self) -> None:  # caller holds the lock
        if self._metrics:
            self._metrics.inference_threads.set(self._alive)

    def health(self) -> str | None:
        """Why the batcher cannot serve now (``None``: it can): not warmed up, stopped, no
        inference thread alive, or a model call running longer than ``stall_s``."""
        if self.failure:
            return self.failure
        if not self.ready.is_set():
            return "the model is not warmed up yet"
        with self._changed:
            if self._closed:
                return self._closed
            if self._alive == 0:
                return "no inference thread is running"
        running_for = self.longest_call_s()
        if self.stall_s is not None and running_for > self.stall_s:
            return f"a model call has been running for {running_for:.0f} s"
        return None

    def longest_call_s(self) -> float:
        """How long the oldest model call running now has run (0: none runs)."""
        with self._changed:
            oldest = min(self._calls.values(), default=None)
        return 0.0 if oldest is None else time.perf_counter() - oldest

    def hung(self) -> str | None:
        """Why the process should be restarted (``None``: it should not): every inference
        thread stopped, or a model call has run for ``HUNG_STALLS`` times ``stall_s``."""
        if self.dead:
            return self.dead
        running_for = self.longest_call_s()
        if self.stall_s is not None and running_for > HUNG_STALLS * self.stall_s:
            return f"a model call has been running for {running_for:.0f} s"
        return None

    def swap(self, predict: Callable[[np.ndarray], np.ndarray], tag: object = None) -> None:
        """Compute every batch from now on with ``predict`` (a batch already running finishes
        with the old one); ``submit_tagged`` answers with ``tag`` for those batches."""
        with self._changed:
            self._predict, self._tag = predict, tag

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for ``images`` (``[k, h, w, 3]`` uint8), computed in some batch."""
        probs, _ = await self.submit_tagged(images)
        return probs

    async def submit_tagged(
        self, images: np.ndarray, want: object = None, timeout: float | None = None
    ) -> tuple[np.ndarray, object]:
        """``(probabilities, tag)``: the tag given to ``swap`` for the model that computed them.
        With ``want``, only the model swapped in with that tag computes them
        (``VersionReplacedError`` once another serves); with ``timeout``, they must be computed
        within that many seconds (``InferenceTimeoutError``)."""
        future = asyncio.get_running_loop().create_future()
        with self._changed:
            if self._closed:
                raise self._refusal()
            if self._waiting_images + len(images) > self.queue_limit:
                if self._metrics:
                    self._metrics.rejected.inc()
                raise QueueFullError(
                    f"server busy: {self._waiting_images} images already waiting; retry shortly"
                )
            self._waiting.append(_Pending(images, future, time.perf_counter(), want))
            self._set_depth(self._waiting_images + len(images))
            if self.max_wait_s > 0 and self.workers > 1:
                self._changed.notify_all()  # a thread waiting for company must hear of it
            else:
                self._changed.notify()  # one idle thread is enough
        if timeout is None:
            outcome = await future
        else:
            # A timer, not asyncio.wait_for (which wraps the wait in a task of its own): the
            # request's future fails at the deadline, and a batch skips a future already done.
            expiry = self._loop.call_later(timeout, self._expire, future, timeout)
            try:
                outcome = await future
            finally:
                expiry.cancel()
        if type(outcome) is _Failed:
            raise _raised(outcome.error) from outcome.error
        return outcome

    def _expire(self, future: asyncio.Future, timeout: float) -> None:
        if future.done():
            return
        if self._metrics:
            self._metrics.timeouts.inc()
        message = f"the model did not compute the request within {timeout:g} s; retry later"
        future.set_result(_Failed(InferenceTimeoutError(message)))

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish what is queued (within ``timeout``), stop the threads."""
        with self._changed:
            self._closed = self._closed or "server is shutting down"
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(0)  # let the last results reach their requests
        self._fail_all_waiting()  # anything still queued after the timeout

    def _set_depth(self, value: int) -> None:  # caller holds the lock
        self._waiting_images = value
        if self._metrics:
            self._metrics.queue_depth.set(value)

    def _work(self) -> None:
        warm_up, self._warm_up = self._warm_up, None
        if warm_up is not None:
            try:
                warm_up()
                del warm_up
            except Exception as exc:
                log.exception("model warm-up failed; not serving")
                with self._changed:
                    self._closed = self.failure = (
                        f"the model failed to warm up: {type(exc).__name__}: {exc}"
                    )
                self._warmed.set()
                self._to_loop(self._fail_all_waiting)
                self._to_loop(self.settled.set)
                return
        self._warmed.set()
        self._to_loop(self.ready.set)
        self._to_loop(self.settled.set)
        self._serve()

    def _serve_after_warm_up(self) -> None:
        self._warmed.wait()
        if self.failure is None:
            self._serve()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._execute(batch)
            except Exception as exc:  # a fault outside the model call: this batch only
                self._to_loop(_fail, batch, _detached(exc))  # (see _execute)
                log.error("a batch of %d request(s) failed: %s", len(batch), _describe(exc))
            except BaseException:  # the thread ends: its requests must not wait for it
                self._to_loop(_fail, batch, InferenceFailedError("the inference thread stopped"))
                raise
            del batch  # (idle, the thread holds no request: its futures, its answer's model)

    def _next_batch(self) -> list[_Pending] | None:
        """Everything waiting, up to the cap; ``None`` once closed and drained."""
        with self._changed:
            while not self._waiting:
                if self._closed:
                    return None
                self._changed.wait()
            if self.max_wait_s > 0:  # wait for company, at most max_wait_s, unless closing
                deadline = time.perf_counter() + self.max_wait_s
                while (
                    not self._closed
                    and self._waiting_images < self.max_batch_size
                    and (left := deadline - time.perf_counter()) > 0
                ):
                    self._changed.wait(left)
            batch, n = [], 0
            while self._waiting and (
                not batch or n + len(self._waiting[0].images) <= self.max_batch_size
            ):
                pending = self._waiting.popleft()
                batch.append(pending)
                n += len(pending.images)
            self._set_depth(self._waiting_images - n)
            return batch

    def _execute(self, batch: list[_Pending]) -> None:
        with self._changed:
            predict, tag = self._predict, self._tag
        live = [p for p in batch if not p.future.done()]  # skip clients that went away
        replaced = [p for p in live if p.want is not None and p.want is not tag]
        if replaced:
            self._to_loop(
                _fail,
                replaced,
                VersionReplacedError(
                    "the model version this request named was replaced before it ran; "
                    "name the version now served, or none"
                ),
            )
            live = [p for p in live if p.want is None or p.want is tag]
        if not live:
            return
        images = live[0].images if len(live) == 1 else np.concatenate([p.images for p in live])
        started = time.perf_counter()
        if self._metrics:
            for p in live:
                self._metrics.queue_wait.observe(started - p.enqueued)
        name = threading.current_thread().name
        with self._changed:
            self._calls[name] = started
        try:
            probs = self._compute(predict, images)
        except Exception as exc:  # the model failed: every request in the batch learns why
            # A detached copy, its traceback as text (the safety net logs it with each
            # request's id): the error's own traceback, and those of the errors chained to it,
            # hold this frame through their frames' callers, and with it the batch's futures:
            # with the error in them, a reference cycle, with the batch's images.
            self._to_loop(_fail, live, _detached(exc))
            return
        finally:
            with self._changed:
                self._calls.pop(name, None)
        if self._metrics:
            self._metrics.inference_time.observe(time.perf_counter() - started)
        self._to_loop(_deliver, live, probs, tag)

    def _compute(self, predict: Callable, images: np.ndarray) -> np.ndarray:
        """``predict`` on at most ``max_batch_size`` images at a time."""
        cap = self.max_batch_size
        slices = (
            [images]
            if len(images) <= cap
            else [images[i : i + cap] for i in range(0, len(images), cap)]
        )
        outputs = []
        for part in slices:
            if self._metrics:
                self._metrics.batch_size.observe(len(part))
            outputs.append(predict(part))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _to_loop(self, callback: Callable, *args) -> None:
        """Run ``callback(*args)`` on the event loop (futures are not thread-safe)."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _refusal(self) -> BatcherClosedError:  # caller holds the lock
        return ModelFailedError(self.failure) if self.failure else BatcherClosedError(self._closed)

    def _fail_all_waiting(self) -> None:
        with self._changed:
            left, self._waiting = list(self._waiting), deque()
            self._set_depth(0)
            refusal = self._refusal()
        _fail(left, refusal)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # (an error whose message itself fails)
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _detached(error: BaseException) -> BaseException:
    """What a failed batch's requests are told: a copy of ``error`` (``_raised``) holding no
    traceback, cause or context (no frames), with the original's traceback, chained errors
    included, as a note (text)."""
    detached = _raised(error)
    try:
        detached.add_note("".join(traceback.format_exception(error)).rstrip())
    except Exception:  # (a traceback that cannot be formatted: the copy alone)
        pass
    return detached


def _deliver(batch: list[_Pending], probs: np.ndarray, tag: object) -> None:
    offset = 0
    for p in batch:
        k = len(p.images)
        if not p.future.done():
            p.future.set_result((probs[offset : offset + k], tag))
        offset += k


def _fail(batch: list[_Pending], exc: Exception) -> None:
    failed = _Failed(exc)
    for p in batch:
        if not p.future.done():
            p.future.set_result(failed)


def _raised(error: BaseException) -> BaseException:
    """A new exception of ``error``'s kind, arguments and attributes, for one request to raise
    (``_Failed`` says why; its notes not copied), made without calling its ``__init__`` again
    (which may want other arguments, or format its message twice). One that cannot be made so,
    or whose message would differ (state kept elsewhere), becomes a ``RuntimeError`` saying
    what it was: answered, logged and counted by the safety net as the original would be
    (none of the batcher's own errors, which are mapped, is such a one)."""
    kind = type(error)
    try:
        fresh = kind.__new__(kind, *error.args)  # (BaseException's keeps the arguments)
        fresh.args = error.args
        fresh.__dict__.update(vars(error))
        fresh.__dict__.pop("__notes__", None)
        if str(fresh) == str(error):
            return fresh
    except Exception:
        pass
    return RuntimeError(_describe(error))
