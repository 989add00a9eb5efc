"""Refusals at the door (api/shedding.py): what admission would refuse, answered from a
request's head alike to the app's answer, counted alike, and only in the plain case.

The app's queue is held full (one request in a blocked model, one queued), so the real
admission check refuses every prediction; the door is asked as the HTTP protocol asks
it, on the app's event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from golden_signals.sampling import TokenBucket
from inference_gateway.api.keys import add_key
from inference_gateway.api.shedding import LoadShedder, RequestHead
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    held_prediction,
    json_log_capture,
    ready_client,
)
from tests.images import cat_jpeg
from tests.scrape import parse, value

JPEG = [(b"content-type", b"image/jpeg")]
DATE = [(b"date", b"Sun, 06 Dec 2026 20:00:00 GMT")]


@contextmanager
def full_queue(key: str | None = None, **settings: Any) -> Iterator[TestClient]:
    """An app whose queue is full: every prediction is refused by admission. ``key``:
    the API key the held requests send (with ``api_keys_file``)."""
    backend = ControlledBackend(blocked=True)
    options: dict[str, Any] = {"max_queue_size": 1, "max_batch_size": 1, "model_warmup": False}
    options.update(settings)
    with TestClient(controlled_app(backend, **options)) as client:
        ready_client(client)
        if key is not None:
            client.headers["x-api-key"] = key
        with held_prediction(client, backend, count=2):
            client.headers.pop("x-api-key", None)
            shedder = _shedder(client)  # one second, however long the test takes:
            shedder.allowance = TokenBucket(shedder.allowance.rate, clock=lambda: 100.0)
            yield client


def _shedder(client: TestClient) -> LoadShedder:
    shedder = client.app.state.shedder  # type: ignore[attr-defined]
    assert isinstance(shedder, LoadShedder)
    return shedder


def ask(
    client: TestClient,
    path: str = "/predict",
    headers: Sequence[tuple[bytes, bytes]] = JPEG,
    *,
    method: str = "POST",
    root_path: str = "",
) -> bytes | None:
    """The door's answer to a request's head, asked on the app's event loop."""
    assert client.portal is not None
    head = RequestHead(method, root_path + path, root_path, headers)
    return client.portal.call(_shedder(client).refusal, head, DATE)


def spend_allowance(client: TestClient, count: int = 2) -> None:
    """The refusals of this second that go through the app (TRACE_REFUSED_PER_SECOND)."""
    for _ in range(count):
        assert ask(client) is None


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, text = line.partition(": ")
        headers[name.lower()] = text
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split(" ")[1]), headers, body


def test_past_the_seconds_allowance_a_refusal_is_answered_at_the_door_as_the_app_would() -> None:
    with full_queue(trace_refused_per_second=2) as client:
        spend_allowance(client)  # the first two of the second go through the app
        raw = ask(client, headers=[*JPEG, (b"x-request-id", b"door-1")])
        assert raw is not None
        status, headers, body = parse_response(raw)
        by_app = client.post(
            "/predict", content=cat_jpeg(), headers={"content-type": "image/jpeg",
                                                     "x-request-id": "app-1"},
        )  # fmt: skip
        assert status == by_app.status_code == 503
        assert headers["content-type"] == by_app.headers["content-type"]
        assert headers["retry-after"] == by_app.headers["retry-after"] == "1"
        assert headers["x-request-id"] == "door-1"
        assert headers["date"] == DATE[0][1].decode()
        problem, app_problem = json.loads(body), by_app.json()
        assert problem["request_id"] == "door-1"
        assert {**problem, "request_id": None} == {**app_problem, "request_id": None}


def test_an_open_inference_protocol_refusal_is_its_error_body() -> None:
    with full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        raw = ask(client, "/v2/models/efficientnet-lite0/versions/1/infer", [])
        assert raw is not None
        status, headers, body = parse_response(raw)
        by_app = client.post("/v2/models/efficientnet-lite0/versions/1/infer", json={})
        assert status == by_app.status_code == 503
        assert json.loads(body) == by_app.json()
        assert set(json.loads(body)) == {"error"}
        assert headers["content-type"] == by_app.headers["content-type"]
        assert len(headers["x-request-id"]) == 36  # a UUID4, as the app gives


def test_refusals_at_the_door_are_counted_as_the_apps_and_summed_in_one_line() -> None:
    with json_log_capture("WARNING") as logs, full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        metrics = client.app.state.telemetry.metrics  # type: ignore[attr-defined]
        before = parse(metrics.render(None)[0].decode())
        for _ in range(3):
            assert ask(client) is not None
        assert ask(client, "/models/efficientnet-lite0/predict") is not None
        after = parse(metrics.render(None)[0].decode())
        assert client.portal is not None
        client.portal.call(_shedder(client).log_tally)  # what the timer does within 1 s

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("http_requests_total", method="POST", endpoint="/predict", status="503") == 3
    assert (
        delta("http_requests_total", method="POST", endpoint="/models/{name}/predict",
              status="503")
        == 1
    )  # fmt: skip
    assert delta("requests_rejected_total", reason="queue_full") == 4
    assert (
        delta("http_request_exceptions_total", endpoint="/predict",
              exception_type="QueueFullException")
        == 3
    )  # fmt: skip
    assert delta("http_request_duration_seconds_count", method="POST", endpoint="/predict") == 3
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    tally = [line for line in lines if line["message"] == "Requests refused before the app"]
    assert len(tally) == 1
    assert tally[0]["refused"] == 4
    assert tally[0]["by_reason"] == {"queue_full": 4}
    assert tally[0]["by_route"] == {
        "/predict efficientnet-lite0:1": 3,
        "/models/{name}/predict efficientnet-lite0:1": 1,
    }
    assert tally[0]["level"] == "WARNING"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/predict", JPEG),  # not a prediction
        ("POST", "/ready", JPEG),
        ("POST", "/models/nope/predict", JPEG),  # unknown model: the app's 404
        ("POST", "/models/efficientnet-lite0/versions/9/predict", JPEG),
        ("POST", "/predict", [*JPEG, (b"x-request-timeout-ms", b"-5")]),  # the app's 400
    ],
)
def test_what_the_app_answers_otherwise_is_left_to_it(
    method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    with full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        assert ask(client, path, headers, method=method) is None
        assert ask(client) is not None  # while a plain refusal is answered at the door


def test_a_query_string_is_the_apps_to_validate() -> None:
    """``?top_k=0`` is the app's 422, and ``/v2``'s ``?version=`` picks another queue."""
    with full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        shedder = _shedder(client)
        assert client.portal is not None
        for query in (b"top_k=0", b"version=1", b"quality=true"):
            head = RequestHead("POST", "/predict", "", JPEG, query)
            assert client.portal.call(shedder.refusal, head, DATE) is None
        assert ask(client) is not None


def test_a_repeated_header_is_read_as_the_app_reads_it(tmp_path: Path) -> None:
    """The first ``X-Request-ID`` and ``X-Request-Timeout-Ms`` (as Starlette's
    ``headers.get``), the last key (as the key middleware)."""
    keys_file = tmp_path / "api-keys"
    key = add_key(keys_file, "ops")
    with full_queue(key, trace_refused_per_second=1, api_keys_file=keys_file) as client:
        with_key = [*JPEG, (b"x-api-key", b"wrong"), (b"x-api-key", key.encode())]
        assert ask(client, headers=with_key) is None  # the second's allowance
        raw = ask(client, headers=[*with_key, (b"x-request-id", b"first"),
                                   (b"x-request-id", b"second")])  # fmt: skip
        assert raw is not None
        assert parse_response(raw)[1]["x-request-id"] == "first"
        # A first timeout header that is invalid is the app's 400, whatever follows.
        bad_first = [*with_key, (b"x-request-timeout-ms", b"-1"), (b"x-request-timeout-ms", b"9")]
        assert ask(client, headers=bad_first) is None


def test_a_fractional_allowance_still_lets_examples_through() -> None:
    """TRACE_REFUSED_PER_SECOND=0.5: one refusal through the app every two seconds."""
    with full_queue(trace_refused_per_second=0.5) as client:
        now = [100.0]
        shedder = _shedder(client)
        shedder.allowance = TokenBucket(0.5, clock=lambda: now[0])
        assert ask(client) is None  # the bucket starts with one
        assert ask(client) is not None
        now[0] += 1.0
        assert ask(client) is not None  # half a token
        now[0] += 1.0
        assert ask(client) is None  # a whole one


def test_with_every_refusal_traced_the_door_is_shut() -> None:
    with full_queue(trace_refused_per_second=0) as client:
        assert not _shedder(client).enabled
        for _ in range(20):
            assert ask(client) is None


def test_a_cors_request_keeps_its_headers_by_going_through_the_app() -> None:
    with full_queue(trace_refused_per_second=1, cors_origins=["https://app.example"]) as client:
        spend_allowance(client, 1)
        assert ask(client, headers=[*JPEG, (b"origin", b"https://app.example")]) is None
        assert ask(client) is not None


def test_without_a_valid_key_the_apps_401_comes_first(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys"
    key = add_key(keys_file, "ops")
    with full_queue(key, trace_refused_per_second=1, api_keys_file=keys_file) as client:
        assert ask(client) is None
        assert ask(client, headers=[*JPEG, (b"x-api-key", b"wrong")]) is None
        with_key = [*JPEG, (b"authorization", f"Bearer {key}".encode())]
        assert ask(client, headers=with_key) is None  # the second's allowance
        assert ask(client, headers=with_key) is not None


def test_under_a_root_path_the_routes_templates_still_match() -> None:
    with full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        assert ask(client, "/models/efficientnet-lite0/predict", root_path="/gateway")
        assert ask(client, "/elsewhere/predict", root_path="/gateway") is None


def test_a_failure_of_the_doors_check_leaves_the_request_to_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with json_log_capture("WARNING") as logs, full_queue(trace_refused_per_second=1) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]

        def broken(*args: object) -> None:
            raise RuntimeError("registry broken")

        monkeypatch.setattr(registry, "resolve", broken)
        assert ask(client) is None
    assert "The door's check failed" in logs.getvalue()


def test_the_last_refusals_at_the_door_are_logged_when_the_app_stops() -> None:
    with json_log_capture("WARNING") as logs, full_queue(trace_refused_per_second=1) as client:
        spend_allowance(client, 1)
        assert ask(client) is not None
    tally = [
        json.loads(line)
        for line in logs.getvalue().splitlines()
        if "Requests refused before the app" in line
    ]
    assert [line["refused"] for line in tally] == [1]
