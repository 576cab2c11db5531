"""Objects built at start are frozen out of the garbage collector's passes while a process
serves, and handed back to it when the process stops serving."""

from __future__ import annotations

import gc
import weakref

from fastapi.testclient import TestClient

from api.app import create_app
from dal.settings import Settings
from dal.startup_heap import startup_objects_frozen


class Node:
    def __init__(self) -> None:
        self.me = self


def test_live_objects_are_frozen_and_start_up_cycles_collected_first() -> None:
    kept = [[index] for index in range(10)]
    garbage = weakref.ref(Node())  # a cycle nothing else refers to
    with startup_objects_frozen():
        assert garbage() is None  # collected, not frozen for good
        tracked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
        assert not any(id(o) in tracked for o in kept)
        made_now = [0]
        assert id(made_now) in {id(o) for o in gc.get_objects()}
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in tracked for o in kept)
    assert gc.get_freeze_count() == 0


def test_the_api_serves_with_its_start_up_objects_frozen() -> None:
    with TestClient(create_app(Settings(app_env="test"))) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
