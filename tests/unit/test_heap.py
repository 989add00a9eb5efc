"""The collector's walks skip what a serving process loaded (inference/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inference_gateway.app import create_app
from inference_gateway.inference import heap
from tests.helpers import ControlledBackend, controlled_loader, make_settings, ready_client


@pytest.fixture
def serving_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As in a process started from `inference_gateway.main`; unfrozen afterwards."""
    monkeypatch.setattr(heap, "_enabled", False)
    monkeypatch.setattr(heap, "_done", False)
    heap.freeze_after_loads()
    try:
        yield
    finally:
        gc.unfreeze()


def test_a_loaded_model_is_out_of_the_collectors_walks(serving_process: None) -> None:
    gc.unfreeze()
    app = create_app(
        make_settings(),
        model_loader=controlled_loader(ControlledBackend()),
        configure_logging=False,
    )
    with TestClient(app) as client:
        ready_client(client)
        model = app.state.registry.resolve().model
        assert gc.get_freeze_count() > 0
        assert model is not None and gc.is_tracked(model)
        assert not any(tracked is model for tracked in gc.get_objects())  # frozen


def test_an_app_in_someone_elses_process_leaves_the_collector_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_enabled", False)
    before = gc.get_freeze_count()
    heap.freeze_long_lived()
    assert gc.get_freeze_count() == before


def test_only_the_first_load_freezes(serving_process: None) -> None:
    """A model loaded while serving must not freeze the requests in flight: what of
    theirs became cyclic garbage afterwards could never be collected."""
    gc.unfreeze()
    heap.freeze_long_lived()
    frozen = gc.get_freeze_count()
    in_flight = [[n] for n in range(100)]  # tracked by the collector
    heap.freeze_long_lived()
    assert gc.get_freeze_count() == frozen
    del in_flight
