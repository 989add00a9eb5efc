"""Prometheus metrics: the contract, exact counts, bounded cardinality, exemplars."""

from __future__ import annotations

import json
import os
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from inference_gateway.app import create_app
from inference_gateway.observability.metrics import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS,
    Metrics,
    _normalize_endpoint,
    served_models,
)
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    controlled_loader,
    held_prediction,
    make_settings,
    ready_client,
    wait_until,
)
from tests.images import cat_jpeg
from tests.scrape import parse, series_count, total, value
from tests.servers import free_port

JPEG = {"content-type": "image/jpeg"}

#: The metric contract: name -> (type, label names). Dashboards and alerts rely on it.
#: Every per-model metric names the model and its version.
MODEL = {"model_name", "model_version"}

CONTRACT: dict[str, tuple[str, set[str]]] = {
    "http_requests_total": ("counter", {"method", "endpoint", "status"}),
    "http_request_duration_seconds": ("histogram", {"method", "endpoint"}),
    "http_request_exceptions_total": ("counter", {"endpoint", "exception_type"}),
    "active_requests": ("gauge", set()),
    "model_inference_duration_seconds": ("histogram", MODEL),
    "model_predictions_total": ("counter", {*MODEL, "class"}),
    "model_inference_errors_total": ("counter", {*MODEL, "error_type"}),
    "inference_queue_size": ("gauge", MODEL),
    "model_memory_usage_bytes": ("gauge", MODEL),
    "prediction_confidence": ("histogram", MODEL),
    "image_size_bytes": ("histogram", set()),
    "model_loaded": ("gauge", MODEL),
    "app_info": ("gauge", {"name", "version", "environment"}),
    "inference_queue_wait_seconds": ("histogram", MODEL),
    "image_preprocess_duration_seconds": ("histogram", set()),
    "inference_batch_size": ("histogram", MODEL),
    "image_decode_failures_total": ("counter", {"reason"}),
    "image_width_pixels": ("histogram", set()),
    "image_height_pixels": ("histogram", set()),
    "requests_rejected_total": ("counter", {"reason"}),
    "tracing_spans_exported_total": ("counter", set()),
    "tracing_spans_dropped_total": ("counter", {"reason"}),
    "batcher_crashes_total": ("counter", MODEL),
    "api_keys_reload_failures_total": ("counter", set()),
    "model_load_failures_total": ("counter", MODEL),
    "model_loads_total": ("counter", MODEL),
    "model_unloads_total": ("counter", MODEL),
    "model_load_duration_seconds": ("histogram", MODEL),
    "grpc_requests_total": ("counter", {"grpc_method", "code"}),
    "grpc_request_duration_seconds": ("histogram", {"grpc_method"}),
}


def _scrape(client: TestClient) -> dict:  # type: ignore[type-arg]
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def test_every_metric_of_the_contract_is_exposed_with_its_type_and_labels(
    controlled_backend: ControlledBackend,
) -> None:
    # With the gRPC service on, whose series exist from start-up.
    with TestClient(controlled_app(controlled_backend, grpc_port=free_port())) as client:
        ready_client(client)
        client.post("/predict", content=cat_jpeg(), headers=JPEG)
        client.post("/predict", content=b"junk", headers=JPEG)  # an exception, a decode failure
        controlled_backend.fail_with = RuntimeError("boom")  # an inference error
        client.post("/predict", content=cat_jpeg(), headers=JPEG)
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in families, name
        family = families[family_name]
        assert family.type == kind, name
        assert f"# TYPE {name} {kind}" in text or f"# TYPE {family_name} {kind}" in text
        sample_labels = {k for s in family.samples for k in s.labels if k not in {"le"}}
        assert sample_labels == labels, name
    for standard in ("process_resident_memory_bytes", "python_gc_objects_collected_total"):
        assert standard in text


def test_latency_buckets_have_an_edge_at_the_slo() -> None:
    assert 0.3 in LATENCY_BUCKETS
    around = [b for b in LATENCY_BUCKETS if 0.1 <= b <= 0.5]
    assert len(around) >= 6


def test_model_state_metrics_follow_the_model(
    real_app_client: TestClient, model_cache_dir: Path
) -> None:
    samples = _scrape(real_app_client)
    assert value(samples, "model_loaded", model_name="efficientnet-lite0", model_version="1") == 1
    # With ONNX Runtime, the model's size is that of its file: graph and weights, as
    # the built-in model is served from its repository export.
    graph = model_cache_dir / "repository" / "efficientnet-lite0" / "1" / "model.onnx"
    on_disk = graph.stat().st_size
    assert (
        value(
            samples, "model_memory_usage_bytes", model_name="efficientnet-lite0", model_version="1"
        )
        == on_disk
    )
    assert (
        value(
            samples, "app_info", name="inference-gateway", version="0.1.0", environment="production"
        )
        == 1
    )


def test_prediction_metrics_record_the_answer_the_client_got(
    real_app_client: TestClient,
) -> None:
    model = "efficientnet-lite0"
    before = _scrape(real_app_client)
    response = real_app_client.post("/predict", content=cat_jpeg(), headers=JPEG)
    after = _scrape(real_app_client)
    assert response.status_code == 200
    top = response.json()["predictions"][0]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta(
            "model_predictions_total",
            model_name=model,
            model_version="1",
            **{"class": top["label"]},
        )
        == 1
    )
    assert total(after, "model_predictions_total") - total(before, "model_predictions_total") == 1
    assert delta("prediction_confidence_count", model_name=model, model_version="1") == 1
    assert delta("prediction_confidence_sum", model_name=model, model_version="1") == pytest.approx(
        top["confidence"]
    )
    for bound in CONFIDENCE_BUCKETS:  # the answer's confidence falls in its bucket
        counted = delta(
            "prediction_confidence_bucket", model_name=model, model_version="1", le=str(bound)
        )
        assert counted == (1 if top["confidence"] <= bound else 0), bound


def test_exact_accounting_of_every_outcome() -> None:
    backend = ControlledBackend()
    app = controlled_app(
        backend, max_body_bytes=64 * 1024, max_queue_size=1, max_batch_size=1, model_warmup=False
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        ready_client(client)
        answered = [client.post("/predict", content=cat_jpeg(), headers=JPEG) for _ in range(3)]
        assert [r.status_code for r in answered] == [200, 200, 200]
        label = answered[0].json()["predictions"][0]["label"]  # the same photo each time
        for _ in range(2):
            assert client.post("/predict", content=b"nope", headers=JPEG).status_code == 400
        assert (
            client.post(
                "/predict", content=b"x", headers={"content-type": "text/plain"}
            ).status_code
            == 415
        )
        assert client.post("/predict?top_k=0", content=cat_jpeg(), headers=JPEG).status_code == 422
        assert client.post("/predict", content=b"\0" * 100_000, headers=JPEG).status_code == 413
        assert client.get("/no/such/path").status_code == 404
        assert client.get("/other?x=1").status_code == 404
        assert client.delete("/predict").status_code == 405
        backend.fail_with = RuntimeError("boom")
        assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 500
        backend.fail_with = None
        # One request refused while the queue is full, then one that times out.
        backend.release.clear()
        with held_prediction(client, backend, count=2) as held:
            assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 503
        assert held == [200, 200]
        backend.release.clear()
        # An idle batcher admits any deadline; this one, far longer than decoding takes,
        # then passes while the model is blocked: a 504.
        timed_out = client.post(
            "/predict", content=cat_jpeg(), headers={**JPEG, "x-request-timeout-ms": "2000"}
        )
        assert timed_out.status_code == 504
        backend.release.set()
        # The abandoned forward pass finishes and is counted before the scrape.
        batcher = app.state.registry.resolve().batcher
        wait_until(lambda: batcher.pending == 0, what="the last forward pass to finish")
        samples = _scrape(client)

    expected = {("/predict", "200"): 5, ("/predict", "400"): 2, ("/predict", "415"): 1,
                ("/predict", "422"): 1, ("/predict", "413"): 1, ("/predict", "500"): 1,
                ("/predict", "503"): 1, ("/predict", "504"): 1, ("/predict", "405"): 1,
                ("unmatched", "404"): 2}  # fmt: skip
    for (endpoint, status), count in expected.items():
        method = "DELETE" if status == "405" else "GET" if endpoint == "unmatched" else "POST"
        assert (
            value(samples, "http_requests_total", method=method, endpoint=endpoint, status=status)
            == count
        ), (endpoint, status)
    posts = sum(c for (e, s), c in expected.items() if e == "/predict" and s != "405")
    assert (
        value(samples, "http_request_duration_seconds_count", method="POST", endpoint="/predict")
        == posts
    )
    assert (
        value(samples, "http_request_duration_seconds_count", method="GET", endpoint="unmatched")
        == 2
    )
    model = {"model_name": "efficientnet-lite0", "model_version": "1"}
    assert total(samples, "model_predictions_total", **model) == 5
    assert value(samples, "model_predictions_total", **model, **{"class": label}) == 5
    assert value(samples, "prediction_confidence_count", **model) == 5
    # Forward passes: the 5 answered, and the one whose caller's deadline passed while
    # it was already computing (it finishes; its answer is discarded).
    assert value(samples, "model_inference_duration_seconds_count", **model) == 6
    assert value(samples, "inference_batch_size_sum", **model) == 6
    assert (
        value(
            samples,
            "model_inference_errors_total",
            **model,
            error_type="RuntimeError",
        )
        == 1
    )
    assert value(samples, "image_decode_failures_total", reason="unsupported_format") == 2
    # 5 answered + the 500 + the 504; the 503 was refused before its image was decoded.
    assert value(samples, "image_size_bytes_count") == 7
    assert value(samples, "requests_rejected_total", reason="queue_full") == 1
    assert value(samples, "requests_rejected_total", reason="payload_too_large") == 1
    assert value(samples, "requests_rejected_total", reason="deadline_exceeded") == 1
    # /ready answered 503 while the model loaded as often as not_ready refusals counted.
    not_ready = value(samples, "http_requests_total", method="GET", endpoint="/ready", status="503")
    assert value(samples, "requests_rejected_total", reason="not_ready") == not_ready
    exceptions = "http_request_exceptions_total"
    assert (
        value(samples, exceptions, endpoint="/predict", exception_type="InvalidImageException") == 2
    )
    assert (
        value(samples, exceptions, endpoint="/predict", exception_type="ModelInferenceException")
        == 1
    )
    assert value(samples, exceptions, endpoint="/predict", exception_type="QueueFullException") == 1
    assert value(samples, "active_requests") == 1  # the scrape itself
    assert value(samples, "inference_queue_size", **model) == 0


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_%") for _ in range(n))


def test_cardinality_does_not_grow_with_unknown_paths_queries_and_headers(
    fake_client: TestClient,
) -> None:
    rng = random.Random(42)

    def burst(count: int) -> None:
        for _ in range(count):
            path = "/" + "/".join(_random_text(rng, 8) for _ in range(rng.randint(1, 4)))
            query = f"?{_random_text(rng, 5)}={_random_text(rng, 12)}"
            headers = {"x-request-id": _random_text(rng, 20), "x-user-id": _random_text(rng, 10),
                       "user-agent": _random_text(rng, 30)}  # fmt: skip
            method = rng.choice(["GET", "POST", "PUT"])
            assert fake_client.request(method, path + query, headers=headers).status_code in (404,)
        fake_client.post(f"/predict?{_random_text(rng, 6)}=1", content=b"junk", headers=JPEG)

    burst(10)
    _scrape(fake_client)  # the scrape's own series exist from here on
    before = series_count(_scrape(fake_client))
    burst(1000)
    after = _scrape(fake_client)
    assert series_count(after) == before
    assert total(after, "http_requests_total", endpoint="unmatched") == 1010


def test_path_parameters_are_counted_under_their_template(fake_client: TestClient) -> None:
    app = fake_client.app

    @app.get("/items/{item_id}")  # type: ignore[attr-defined,misc]
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    for item_id in ("1", "2", "abc"):
        assert fake_client.get(f"/items/{item_id}").status_code == 200
    samples = _scrape(fake_client)
    assert (
        value(
            samples, "http_requests_total", method="GET", endpoint="/items/{item_id}", status="200"
        )
        == 3
    )


def test_normalize_endpoint_reads_the_matched_route_template() -> None:
    class Route:
        path = "/users/{id}"

    assert _normalize_endpoint({"route": Route()}) == "/users/{id}"
    assert _normalize_endpoint({}) == "unmatched"


@pytest.mark.parametrize("sampler", [None, "always_on"], ids=["tail sampling", "head sampling"])
def test_openmetrics_scrape_carries_trace_id_exemplars(sampler: str | None) -> None:
    """Exemplars name exported traces only: the request's (kept here) under tail
    sampling, where a batch's forward pass runs before any of its requests is decided
    and so carries none; both under head sampling."""
    app = create_app(
        make_settings(otel_traces_sampler=sampler),
        model_loader=controlled_loader(ControlledBackend()),
        configure_logging=False,
    )
    with TestClient(app) as fake_client:
        ready_client(fake_client)
        _check_exemplars(fake_client, inference_exemplar=sampler is not None)


def test_under_head_sampling_an_unsampled_request_is_no_exemplar() -> None:
    """With a head sampler that samples nothing, no histogram names a trace: not the
    request's latency, not the forward pass's (the batch's first sampled request)."""
    app = create_app(
        make_settings(otel_traces_sampler="always_off"),
        model_loader=controlled_loader(ControlledBackend()),
        configure_logging=False,
    )
    with TestClient(app) as fake_client:
        ready_client(fake_client)
        response = fake_client.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert response.status_code == 200
        assert response.headers["traceparent"].endswith("-00")
        text = fake_client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text
    assert "model_inference_duration_seconds_bucket" in text
    assert "trace_id" not in text


def _check_exemplars(fake_client: TestClient, *, inference_exemplar: bool) -> None:
    response = fake_client.post("/predict", content=cat_jpeg(), headers=JPEG)
    trace_id = response.json()["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    scrape = fake_client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    text = scrape.text
    lines = text.splitlines()
    request_lines = [
        line
        for line in lines
        if line.startswith("http_request_duration_seconds_bucket") and 'endpoint="/predict"' in line
    ]
    inference_lines = [
        line for line in lines if line.startswith("model_inference_duration_seconds_bucket")
    ]
    assert any(f'trace_id="{trace_id}"' in line for line in request_lines)
    assert any(f'trace_id="{trace_id}"' in line for line in inference_lines) == inference_exemplar
    plain = fake_client.get("/metrics").text
    assert "trace_id" not in plain  # the classic text format has no exemplars


def test_two_apps_in_one_process_do_not_share_counters() -> None:
    first = controlled_app(ControlledBackend())
    second = controlled_app(ControlledBackend())
    with TestClient(first) as a, TestClient(second) as b:
        ready_client(a)
        ready_client(b)
        for _ in range(3):
            a.post("/predict", content=cat_jpeg(), headers=JPEG)
        assert (
            value(
                _scrape(a), "http_requests_total", method="POST", endpoint="/predict", status="200"
            )
            == 3
        )
        assert (
            value(
                _scrape(b), "http_requests_total", method="POST", endpoint="/predict", status="200"
            )
            == 0
        )


def test_metrics_can_be_switched_off() -> None:
    app = controlled_app(ControlledBackend(), enable_metrics=False)
    assert app.state.telemetry.metrics is None
    with TestClient(app) as client:
        ready_client(client)
        assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 200
        assert client.get("/metrics").status_code == 404


def test_queue_gauge_shows_waiting_requests() -> None:
    backend = ControlledBackend(blocked=True)
    with TestClient(controlled_app(backend, model_warmup=False)) as client:
        ready_client(client)
        model = {"model_name": "efficientnet-lite0", "model_version": "1"}
        with held_prediction(client, backend):
            assert value(_scrape(client), "inference_queue_size", **model) == 1
            assert value(_scrape(client), "active_requests") == 2  # held prediction + scrape
        assert value(_scrape(client), "inference_queue_size", **model) == 0


def test_helpers_record_what_they_say() -> None:
    metrics = Metrics(app_name="a", app_version="1", environment="test")
    metrics.record_request("GET", "/x", 200, 0.31, trace_id="0" * 31 + "1")
    metrics.record_inference(("m", "1"), 0.01, batch_size=3)
    metrics.record_error("/x", "ValueError")
    metrics.set_queue_size(("m", "1"), 7)
    metrics.record_queue_wait(("m", "1"), 0.002)
    samples = parse(metrics.render(None)[0].decode())
    assert value(samples, "http_requests_total", method="GET", endpoint="/x", status="200") == 1
    assert (
        value(
            samples, "http_request_duration_seconds_bucket", method="GET", endpoint="/x", le="0.3"
        )
        == 0
    )
    assert (
        value(
            samples, "http_request_duration_seconds_bucket", method="GET", endpoint="/x", le="0.35"
        )
        == 1
    )
    assert value(samples, "inference_batch_size_sum", model_name="m", model_version="1") == 3
    assert (
        value(samples, "http_request_exceptions_total", endpoint="/x", exception_type="ValueError")
        == 1
    )
    assert value(samples, "inference_queue_size", model_name="m", model_version="1") == 7
    assert (
        value(samples, "inference_queue_wait_seconds_count", model_name="m", model_version="1") == 1
    )


def test_a_version_forgotten_and_served_again_is_counted_anew_in_one_process() -> None:
    """A forgotten version's series go, and when it is served again its answers make
    them anew (the series each request writes are looked up once, and forgotten too)."""
    metrics = Metrics(app_name="a", app_version="1", environment="test")
    model = ("m", "2")
    labels = {"model_name": "m", "model_version": "2"}
    metrics.initialise_model(model)
    metrics.record_prediction(model, "cat", 0.9)
    metrics.record_inference(model, 0.01, batch_size=2)
    metrics.record_queue_wait(model, 0.002)
    metrics.forget_model(model)
    samples = parse(metrics.render(None)[0].decode())
    assert not any(name == "model_predictions_total" for name, _ in samples)
    metrics.initialise_model(model)
    metrics.record_prediction(model, "cat", 0.8)
    metrics.record_inference(model, 0.01, batch_size=3)
    metrics.record_queue_wait(model, 0.002)
    samples = parse(metrics.render(None)[0].decode())
    assert value(samples, "model_predictions_total", **labels, **{"class": "cat"}) == 1
    assert value(samples, "prediction_confidence_count", **labels) == 1
    assert value(samples, "inference_batch_size_sum", **labels) == 3
    assert value(samples, "inference_queue_wait_seconds_count", **labels) == 1


@pytest.mark.parametrize(
    "accept", [None, "text/plain", "application/openmetrics-text; version=1.0.0"]
)
def test_render_negotiates_the_format(accept: str | None) -> None:
    body, content_type = Metrics(app_name="a", app_version="1", environment="t").render(accept)
    assert body
    expected = (
        "application/openmetrics-text" if accept and "openmetrics" in accept else "text/plain"
    )
    assert content_type.startswith(expected)


def test_metrics_port_moves_metrics_off_the_public_port() -> None:
    port = free_port()
    backend = ControlledBackend()
    app = controlled_app(backend, metrics_port=port)
    with TestClient(app) as client:
        ready_client(client)
        assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 200
        assert client.get("/metrics").status_code == 404
        private = httpx.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"accept": "application/openmetrics-text"},
            timeout=10,
        )
        assert private.status_code == 200
        assert private.headers["content-type"].startswith("application/openmetrics-text")
        samples = parse(private.text)
        assert (
            value(samples, "http_requests_total", method="POST", endpoint="/predict", status="200")
            == 1
        )
        assert 'trace_id="' in private.text  # exemplars survive the move
    # The app's shutdown closed the port.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def _dead_workers_files(directory: Path, predictions: dict[tuple[str, str], float]) -> None:
    """Leave in ``directory`` what a worker that died leaves: its published predictions
    per (model version, class), written by a real process that has ended (the library's
    families), and a kept trace in prometheus_client's files (of a pid that is no
    process)."""
    code = (
        "import json, sys\n"
        "from inference_gateway.observability.metrics import RequestFamilies\n"
        "families = RequestFamilies(sys.argv[1])\n"
        "families.registry.start()\n"
        "for version, cls, number in json.loads(sys.argv[2]):\n"
        "    families.predictions.inc(('m', version, cls), number)\n"
        "families.registry.close()\n"
    )
    entries = [[version, cls, number] for (version, cls), number in predictions.items()]
    subprocess.run(
        [sys.executable, "-c", code, str(directory), json.dumps(entries)], check=True, timeout=120
    )
    _kept_traces_file(directory, 999_999_999)


def _kept_traces_file(directory: Path, pid: int) -> None:
    """Write the counter file a worker ``pid`` leaves with prometheus_client's
    multiprocess mode: one kept trace, a series without model labels."""
    db = MmapedDict(str(directory / f"counter_{pid}.db"))  # type: ignore[no-untyped-call]
    try:
        key = mmap_key("traces_kept", "traces_kept_total", ["reason"], ["ratio"], "Kept.")
        db.write_value(key, 1.0, 0.0)  # type: ignore[no-untyped-call]
    finally:
        db.close()  # type: ignore[no-untyped-call]


def test_multiprocess_scrapes_leave_out_versions_no_live_worker_serves(tmp_path: Path) -> None:
    """Several workers: a retired version's series leave every scrape, including the
    counts of workers that died, while the versions still served keep the sum of every
    worker's counts (none goes down) and series without a model stay."""
    directory = tmp_path
    # A worker that died (its values stay) and the stale list of versions of a pid that
    # is no worker of this server (pid 1's parent is none of ours).
    _dead_workers_files(directory, {("1", "cat"): 4, ("2", "dog"): 5, ("3", "cat"): 6})
    (directory / "models-1.json").write_text(json.dumps([["m", "3"]]))
    metrics = Metrics(
        app_name="a", app_version="1", environment="t", multiprocess_dir=str(tmp_path)
    )
    metrics.families.registry.start()
    metrics.initialise_model(("m", "1"))
    metrics.initialise_model(("m", "2"))
    for version, cls, number in (("1", "cat", 3), ("2", "cat", 2)):
        for _ in range(number):
            metrics.record_prediction(("m", version), cls, 0.5)
    _kept_traces_file(directory, os.getpid())  # what this worker's kept trace writes

    def predictions() -> dict[tuple[str, str], float]:
        samples = parse(metrics.render(None)[0].decode())
        assert value(samples, "traces_kept_total", reason="ratio") == 2
        return {
            (dict(labels)["model_version"], dict(labels)["class"]): number
            for (name, labels), number in samples.items()
            if name == "model_predictions_total"
        }

    try:
        assert predictions() == {("1", "cat"): 7, ("2", "cat"): 2, ("2", "dog"): 5}
        metrics.forget_model(("m", "2"))
        assert predictions() == {("1", "cat"): 7}
        # Served again, a version goes on from its counts: it never goes backwards.
        metrics.initialise_model(("m", "2"))
        assert predictions() == {("1", "cat"): 7, ("2", "cat"): 2, ("2", "dog"): 5}
        # A worker that stopped serves nothing: what only it listed leaves with it.
        metrics.mark_process_dead(os.getpid())
        assert predictions() == {}
        assert served_models(directory) == frozenset()
    finally:
        metrics.families.registry.close()


def test_a_version_served_again_by_several_workers_shows_no_exemplar_of_its_old_life(
    tmp_path: Path,
) -> None:
    """Several workers: a retired version's values stay (a counter never goes back), but
    the examples of its earlier life leave with it."""
    metrics = Metrics(
        app_name="a", app_version="1", environment="t", multiprocess_dir=str(tmp_path)
    )
    model, old, new = ("m", "1"), "a" * 32, "b" * 32
    metrics.initialise_model(model)
    metrics.record_prediction(model, "cat", 0.95, trace_id=old)
    metrics.forget_model(model)
    metrics.initialise_model(model)
    metrics.record_prediction(model, "cat", 0.45, trace_id=new)
    exposition = metrics.render("application/openmetrics-text")[0].decode()
    assert f'trace_id="{new}"' in exposition
    assert f'trace_id="{old}"' not in exposition
    assert (
        value(parse(exposition), "prediction_confidence_count", model_name="m", model_version="1")
        == 2
    )
