"""``app.memory``'s collector setting: what lives as long as the server is kept off the cyclic
collector's walks, and a model a reload replaced is still freed."""

from __future__ import annotations

import asyncio
import gc
import weakref

from fastapi.testclient import TestClient

from app.main import create_app
from app.memory import YOUNG_COLLECTION_THRESHOLD, freeze_long_lived_objects
from tests.helpers import make_settings, until


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_objects_are_skipped_until_the_next_freeze_collects_them():
    try:
        kept = Node()
        freeze_long_lived_objects()
        assert gc.get_freeze_count() > 0
        ref = weakref.ref(kept)
        del kept
        gc.collect()
        assert ref() is not None  # frozen: a collection does not walk it
        freeze_long_lived_objects()  # (as after a reload) unfrozen, collected, then frozen
        assert ref() is None
    finally:
        gc.unfreeze()


def test_the_server_freezes_what_it_holds_once_warmed_up(tiny_model_root):
    gc.unfreeze()
    try:
        with TestClient(create_app(make_settings(tiny_model_root))) as client:
            until(lambda: client.get("/health/ready").status_code == 200, timeout=60)
            # frozen after the warm-up: the model, the app and its routes among them (a
            # frozen object is in none of the collector's generations)
            assert gc.get_freeze_count() > 10_000
            model, app = client.app.state.model, client.app
            assert not any(o is model or o is app for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_the_server_collects_its_youngest_objects_less_often(tiny_model_root):
    """Once warmed up, the youngest generation is collected after 10,000 net allocations, not
    Python's 700 (a request's containers die young, by their reference counts); the older
    generations as before. Building the app alone changes nothing."""
    gc.set_threshold(700, 10, 10)
    try:
        app = create_app(make_settings(tiny_model_root))
        assert gc.get_threshold() == (700, 10, 10)
        with TestClient(app) as client:
            until(lambda: client.get("/health/ready").status_code == 200, timeout=60)
            assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 10, 10)
    finally:
        gc.unfreeze()


def _reloader():
    from app.reload import ModelReloader

    return ModelReloader(app_state=None, settings=None, metrics=None)


def test_a_replaced_model_held_by_requests_in_flight_is_freed_before_the_next_freeze(
    monkeypatch,
):
    """The swap's freeze waits until the old model is freed: frozen while a request still held
    it, a reference cycle in it would never be collected."""
    import app.reload

    monkeypatch.setattr(app.reload, "COLLECT_EVERY_S", 0.2)
    old_model = Node()
    freeze_long_lived_objects()  # as at start: the model among what was frozen
    ref = weakref.ref(old_model)
    in_flight = [old_model]  # a request that still holds it
    del old_model

    async def swap() -> None:
        asyncio.get_running_loop().call_later(0.6, in_flight.clear)  # its answer goes out
        await _reloader()._freeze_once_freed(ref)

    try:
        asyncio.run(swap())
        assert ref() is None  # collected, not frozen with the request that held it
        assert gc.get_freeze_count() > 0  # what serves frozen again
    finally:
        gc.unfreeze()


def test_waiting_for_a_replaced_model_collects_only_every_few_seconds(monkeypatch):
    """A model freed by its reference counts (the last request's answer) is seen by the weak
    reference alone: one full collection when the wait starts and the freeze's own, not one
    per look (25 looks here)."""
    import app.reload

    monkeypatch.setattr(app.reload, "FREE_POLL_S", 0.02)
    collections = []
    real_collect = gc.collect

    def counted_collect(*args):
        collections.append(args)
        return real_collect(*args)

    monkeypatch.setattr(gc, "collect", counted_collect)  # (app.reload's and app.memory's)
    old_model = object.__new__(Node)  # no cycle: its reference count frees it
    ref = weakref.ref(old_model)
    in_flight = [old_model]
    del old_model

    async def swap() -> None:
        asyncio.get_running_loop().call_later(0.5, in_flight.clear)
        await _reloader()._freeze_once_freed(ref)

    try:
        asyncio.run(swap())
        assert ref() is None and gc.get_freeze_count() > 0
        assert len(collections) == 2  # the wait's first, then the freeze's
    finally:
        gc.unfreeze()


def test_a_replaced_model_never_freed_leaves_the_collector_on(monkeypatch, caplog):
    import app.reload

    monkeypatch.setattr(app.reload, "FREE_WAIT_S", 0.3)
    monkeypatch.setattr(app.reload, "FREE_POLL_S", 0.05)
    held = Node()
    freeze_long_lived_objects()
    try:
        asyncio.run(_reloader()._freeze_once_freed(weakref.ref(held)))
        assert gc.get_freeze_count() == 0  # nothing frozen: the collector sees everything
        assert "still referenced" in caplog.text
    finally:
        gc.unfreeze()
