"""Zero-downtime version reload, as TF Serving does: poll the model folder, load and warm up a
newer version beside the one serving, then swap; keep serving the old one if the new one fails.

Off unless ``CIFAR10_MODEL_POLL_S`` is set (and never with a pinned ``CIFAR10_MODEL_VERSION``).
A version folder is loaded only once its contents (every file's size and modification time)
were the same at two polls in a row, so a copy still in progress is not read half-written; a
version that failed is tried again only when its contents change. The swap happens between two
model calls: every request is answered, each by the version that computed it (its answer says
which). After the swap nothing refers to the old model any more, so its memory is released.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from app.batching import MicroBatcher
from app.config import Settings
from app.memory import freeze_long_lived_objects
from app.metrics import Metrics
from app.model import ServedModel, load_served_model

log = logging.getLogger(__name__)

# How long after a swap the replaced model may stay referenced (by requests still in flight)
# before the collector is left on for good, how often that is looked at, and how often a full
# collection runs meanwhile (for a model in a reference cycle).
FREE_WAIT_S = 60.0
FREE_POLL_S = 0.5
COLLECT_EVERY_S = 5.0


@dataclass
class ReloadFailure:
    version: int
    error: str


def newest_version(model_dir: Path) -> int | None:
    versions = [
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit()
    ]
    return max(versions, default=None)


def contents_signature(path: Path) -> tuple:
    """Every file's relative path, size and modification time: changes while a copy runs."""
    return tuple(
        sorted(
            (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
            for f in path.rglob("*")
            if f.is_file()
        )
    )


class ModelReloader:
    """Polls ``settings.model_dir`` and swaps the app's model for a newer version."""

    def __init__(self, app_state, settings: Settings, metrics: Metrics) -> None:
        self.state, self.settings, self.metrics = app_state, settings, metrics
        self.failure: ReloadFailure | None = None  # the last version that failed to load
        self._seen: tuple[int, tuple] | None = None  # (version, signature) at the last poll
        self._failed_signature: tuple | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.poll()
            except Exception:  # a poll must never end the loop
                log.exception("model poll failed")

    async def poll(self) -> bool:
        """One poll; ``True`` if it swapped in a new version."""
        # (only the version: this frame must not hold the model that a swap replaces)
        current_version = self.state.model.version
        model_dir = Path(self.settings.model_dir)
        version = await run_in_threadpool(newest_version, model_dir)
        if version is None or version <= current_version:
            self._seen = None
            return False
        path = model_dir / str(version)
        signature = await run_in_threadpool(contents_signature, path)
        stable = self._seen == (version, signature)
        self._seen = (version, signature)
        if not stable or signature == self._failed_signature:
            return False
        return await self._load_and_swap(version, signature)

    async def _load_and_swap(self, version: int, signature: tuple) -> bool:
        batcher: MicroBatcher = self.state.batcher
        current: ServedModel = self.state.model
        try:
            new = await run_in_threadpool(
                load_served_model,
                self.settings.model_dir,
                version,
                self.settings.runtime,
                self.settings.precision,
                self.settings.inference_streams,
            )
            if new.class_names != current.class_names or new.input_size != current.input_size:
                raise ValueError(
                    f"version {version} has other classes or input size than version "
                    f"{current.version}; restart the server to serve it"
                )
            sizes = (1, self.settings.max_batch_size)
            await run_in_threadpool(new.warm_up, max(self.settings.warmup_runs, 1), sizes)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.failure = ReloadFailure(version, message)
            self._failed_signature = signature
            self.metrics.reloads.labels("failure").inc()
            log.error(
                "version %s not loaded, still serving %s: %s", version, current.version, message
            )
            return False
        batcher.swap(new.predict, new)
        self.state.model = new
        self.failure = None
        self.metrics.model_info.info({k: str(v) for k, v in new.describe().items()})
        self.metrics.reloads.labels("success").inc()
        log.info("now serving version %s (was %s)", version, current.version)
        old = weakref.ref(current)
        del current
        await self._freeze_once_freed(old)
        return True

    async def _freeze_once_freed(self, old: weakref.ref) -> None:
        """The collector back on everything (the old model was frozen with what lives as long
        as the server), until the old model is freed: requests still in flight hold it (their
        batch, their answer's tag), and frozen now, a reference cycle in it would never be
        collected. Then what serves is frozen again (``app.memory``); if the old model is not
        freed within ``FREE_WAIT_S``, the collector is left on (it frees the model when the
        last reference goes) and a warning says so. The weak reference is looked at every
        ``FREE_POLL_S`` (the last request's answer frees the model); a full collection (tens
        of milliseconds, holding the interpreter) runs every ``COLLECT_EVERY_S``, for a model
        in a reference cycle."""
        gc.unfreeze()
        loop = asyncio.get_running_loop()
        next_collection = loop.time()
        deadline = next_collection + FREE_WAIT_S
        while True:
            if loop.time() >= next_collection:
                await run_in_threadpool(gc.collect)
                next_collection = loop.time() + COLLECT_EVERY_S
            if old() is None:
                await run_in_threadpool(freeze_long_lived_objects)
                return
            if loop.time() > deadline:
                await run_in_threadpool(gc.collect)  # (one last look, not one 5 s old)
                if old() is None:
                    await run_in_threadpool(freeze_long_lived_objects)
                    return
                log.warning(
                    "the replaced model is still referenced %.0f s after the swap; the "
                    "garbage collector stays on all objects",
                    FREE_WAIT_S,
                )
                return
            await asyncio.sleep(FREE_POLL_S)
