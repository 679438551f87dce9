"""``app.memory``'s collector setting: what lives as long as the server is kept off the cyclic
collector's walks, and a model a reload replaced is still freed."""

from __future__ import annotations

import gc
import weakref

from fastapi.testclient import TestClient

from app.main import create_app
from app.memory import freeze_long_lived_objects
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
            # frozen after the warm-up: the model, the app and its routes among them
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
