"""The Ray Serve application with Ray's ``@serve.batch`` in place of the service's batcher, for
``benchmarks/ray_serve.py --serve-batch`` to measure against ``app/ray_serve.py`` (issue 44:
"the batcher, or Ray's ``@serve.batch``, whichever measures better").

A replica is ``app.ray_serve.Classifier`` (the same app, routes, decoding and errors), except
that once the model is warm every inference request goes through ``_infer``, a
``@serve.batch`` method: Serve gathers the calls on the replica's event loop, up to the
service's ``max_batch_size`` images, waiting at most ``max_batch_wait_ms`` for company, and one
batch at a time (``max_concurrent_batches=1``) runs the same model call in a thread while the
loop goes on parsing; it records the batch sizes and model time in the batcher's metrics, as
the batcher does (``benchmarks/ray_serve.py`` reads them: the batches were Serve's). Not for
serving: the batcher's per-request timeout, queue limit and queue-wait figures, version tags
on reload and health are bypassed (less work per request than the batcher does), and a
request of more images than ``max_batch_size`` fails where the batcher splits it.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve
from ray.serve import Application

from app.ray_serve import Classifier, serve_settings


def _images(calls: list[np.ndarray]) -> int:
    return sum(len(c) for c in calls)


@serve.deployment(name="Classifier")  # (already an ingress: its parent is)
class ServeBatchClassifier(Classifier.func_or_class):
    async def __init__(self, settings: dict) -> None:  # (Serve's ingress makes the parent's async)
        await super().__init__(settings)
        self._infer.set_max_batch_size(self._settings.max_batch_size)
        self._infer.set_batch_wait_timeout_s(self._settings.max_batch_wait_ms / 1000)
        self._predict = None

    def __serve_build_asgi_app__(self):
        asgi = super().__serve_build_asgi_app__()

        async def wrapped(scope, receive, send):
            async def sending(message):
                if message["type"] == "lifespan.startup.complete":
                    self._through_serve_batch(self._app.state.batcher)
                await send(message)

            await asgi(scope, receive, sending if scope["type"] == "lifespan" else send)

        return wrapped

    def _through_serve_batch(self, batcher) -> None:
        self._predict, self._metrics = batcher._predict, batcher._metrics

        async def submit_tagged(images, want=None, timeout=None):
            return await self._infer(images), batcher._tag

        batcher.submit_tagged = submit_tagged

    @serve.batch(max_concurrent_batches=1, batch_size_fn=_images)
    async def _infer(self, calls: list[np.ndarray]) -> list[np.ndarray]:
        images = np.concatenate(calls)
        started = time.perf_counter()
        probs = await asyncio.to_thread(self._predict, images)
        if self._metrics is not None:  # the batcher's own figures, as it records them
            self._metrics.inference_time.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(images))
        return np.split(probs, np.cumsum([len(c) for c in calls])[:-1])


def build(args: dict) -> Application:
    return ServeBatchClassifier.bind(serve_settings(args))
