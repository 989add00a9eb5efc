"""The gRPC service in the app's own process, driven by ``tritonclient.grpc`` over a
controllable backend: readiness, refusals, deadlines, failures, shutdown, and the span,
log line and metrics of every call."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from inference_gateway.api.v2 import grpc_codec
from inference_gateway.app import create_app
from tests.helpers import (
    ControlledBackend,
    controlled_app,
    controlled_class,
    controlled_loader,
    held_prediction,
    json_log_capture,
    make_settings,
    ready_client,
    wait_until,
)
from tests.images import cat_jpeg
from tests.oip import grpc_images, refusal
from tests.scrape import parse, value
from tests.servers import free_port

MODEL = "efficientnet-lite0"
INFER = "/inference.GRPCInferenceService/ModelInfer"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@contextmanager
def serving(app: Any, port: int) -> Iterator[tuple[TestClient, grpcclient.InferenceServerClient]]:
    """The app running (its lifespan too), and a gRPC client of its service."""
    with TestClient(app) as client:
        ready_client(client)
        grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            yield client, grpc_client
        finally:
            grpc_client.close()


@contextmanager
def grpc_app(
    backend: ControlledBackend, **settings: object
) -> Iterator[tuple[TestClient, grpcclient.InferenceServerClient]]:
    """An app over ``backend`` with its gRPC service on a free port."""
    port = free_port()
    with serving(controlled_app(backend, grpc_port=port, **settings), port) as clients:
        yield clients


def lines(logs: Any, endpoint: str = INFER) -> list[dict[str, Any]]:
    """The access lines of ``endpoint``'s calls in a log capture."""
    parsed = [json.loads(line) for line in logs.getvalue().splitlines()]
    return [line for line in parsed if line.get("endpoint") == endpoint]


def errors(logs: Any) -> list[dict[str, Any]]:
    """The ERROR lines of a log capture, whoever wrote them (grpcio included)."""
    parsed = [json.loads(line) for line in logs.getvalue().splitlines()]
    return [line for line in parsed if line["level"] == "ERROR"]


def infer_count(client: TestClient, code: str) -> float:
    samples = parse(client.get("/metrics").text)
    return value(samples, "grpc_requests_total", grpc_method="ModelInfer", code=code)


# --- What the service answers ---------------------------------------------------------------


def test_readiness_is_a_yes_or_no_as_triton_answers_it() -> None:
    backend = ControlledBackend()
    with grpc_app(backend) as (client, server):
        assert server.is_server_live() and server.is_server_ready()
        assert server.is_model_ready(MODEL) and server.is_model_ready(MODEL, "1")
        assert not server.is_model_ready("nope") and not server.is_model_ready(MODEL, "9")
        client.app.state.registry.begin_drain()  # type: ignore[attr-defined]
        assert server.is_server_live() and not server.is_server_ready()
        assert not server.is_model_ready(MODEL)
        draining = refusal(lambda: server.infer(MODEL, [grpc_images(cat_jpeg())]))
        assert draining.status() == "StatusCode.UNAVAILABLE"
        assert "shutting down" in draining.message()


def test_encoded_images_in_typed_contents_from_a_plain_stub_are_answered() -> None:
    """Not every client sends raw contents: a KServe-style ``bytes_contents`` works too."""
    backend = ControlledBackend()
    port = free_port()
    photo = cat_jpeg()
    with (
        serving(controlled_app(backend, grpc_port=port), port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed-1")
        request.inputs.add(
            name="input", datatype="BYTES", shape=[1]
        ).contents.bytes_contents.append(photo)
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    result = grpcclient.InferResult(response)
    scores = result.as_numpy("logits")
    assert scores is not None and scores.shape == (1, 1000)
    assert int(np.argmax(scores[0])) == controlled_class(photo)
    assert response.id == "typed-1" and response.model_version == "1"


def test_rpcs_the_gateway_does_not_offer_answer_unimplemented() -> None:
    with grpc_app(ControlledBackend()) as (_, server), json_log_capture() as logs:
        refused = refusal(server.get_system_shared_memory_status)
        assert refused.status() == "StatusCode.UNIMPLEMENTED"
        assert refused.message() == "SystemSharedMemoryStatus is not offered by this server."
        endpoint = "/inference.GRPCInferenceService/SystemSharedMemoryStatus"
        wait_until(lambda: bool(lines(logs, endpoint)))
        (line,) = lines(logs, endpoint)
        assert (line["level"], line["status_code"]) == ("WARNING", 12)


# --- Deadlines and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_timeout", "request_timeout", "message"),
    [
        # The client's deadline, shorter than the server's: whichever side sees it pass
        # first says so (the client itself, or the server, whose deadline is the same).
        (1, 10.0, ""),
        (None, 1.0, "did not finish before the deadline"),  # REQUEST_TIMEOUT caps it
    ],
    ids=["client deadline", "REQUEST_TIMEOUT"],
)
def test_a_call_held_past_its_deadline_is_deadline_exceeded(
    client_timeout: int | None, request_timeout: float, message: str
) -> None:
    backend = ControlledBackend(blocked=True)
    settings = {"model_warmup": False, "request_timeout": request_timeout}
    with grpc_app(backend, **settings) as (client, server), json_log_capture() as logs:
        try:
            late = refusal(
                lambda: server.infer(
                    MODEL, [grpc_images(cat_jpeg())], client_timeout=client_timeout
                )
            )
            assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
            assert message in late.message()
            wait_until(lambda: bool(lines(logs)), what="the call's access line")
        finally:
            backend.release.set()
        (line,) = lines(logs)
        assert (line["level"], line["status_code"]) == ("WARNING", 4)
        assert line["error_type"] == "InferenceTimeoutException"
        assert infer_count(client, "DEADLINE_EXCEEDED") == 1
        assert errors(logs) == []


def test_a_full_queue_is_resource_exhausted_and_counted_as_arefusal() -> None:
    backend = ControlledBackend(blocked=True)
    settings = {"model_warmup": False, "max_queue_size": 1, "max_batch_size": 1}
    with grpc_app(backend, **settings) as (client, server), json_log_capture() as logs:
        with held_prediction(client, backend, count=2):
            full = refusal(lambda: server.infer(MODEL, [grpc_images(cat_jpeg())]))
        assert full.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "waiting for the model" in full.message()
        samples = parse(client.get("/metrics").text)
        assert value(samples, "requests_rejected_total", reason="queue_full") == 1
        assert infer_count(client, "RESOURCE_EXHAUSTED") == 1
        (line,) = lines(logs)
        assert (line["level"], line["error_type"]) == ("WARNING", "QueueFullException")


#: One preprocessed image as a raw FP32 tensor: 602,112 bytes of payload.
IMAGE_BYTES = 3 * 224 * 224 * 4


def _tensor_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(np.full((1, 3, 224, 224), 0.25, dtype=np.float32))
    return tensor


@contextmanager
def held_calls(
    client: TestClient, server: grpcclient.InferenceServerClient, count: int
) -> Iterator[list[Any]]:
    """``count`` tensor calls held by a blocked backend: the first in the model, the
    others queued. Released (and their answers collected) on exit."""
    host = client.app.state.registry.resolve()  # type: ignore[attr-defined]
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: answers.append(server.infer(MODEL, [_tensor_input()])))
        for _ in range(count)
    ]
    for n, thread in enumerate(threads, start=1):
        thread.start()
        wait_until(lambda n=n: host.batcher.pending == n, what=f"{n} calls in the batcher")
    try:
        yield answers
    finally:
        for thread in threads:
            thread.join(timeout=30)


def test_grpc_messages_count_against_max_inflight_bytes_with_http_uploads() -> None:
    """``MAX_INFLIGHT_BYTES`` is one budget per worker: the messages of gRPC calls in
    flight count, a call beyond it is RESOURCE_EXHAUSTED, and an HTTP upload arriving
    while they hold it is refused (503) as when uploads alone fill it."""
    backend = ControlledBackend(blocked=True)
    settings = {"model_warmup": False, "max_inflight_bytes": 2 * IMAGE_BYTES + 1024}
    with grpc_app(backend, **settings) as (client, server), json_log_capture() as logs:
        try:
            with held_calls(client, server, 2) as answers:
                over = refusal(lambda: server.infer(MODEL, [_tensor_input()]))
                assert over.status() == "StatusCode.RESOURCE_EXHAUSTED"
                assert "Uploads held in memory" in over.message()
                upload = client.post(
                    "/predict", content=b"\xff" * 4096, headers={"content-type": "image/jpeg"}
                )
                assert upload.status_code == 503
                assert upload.json()["type"].endswith(":memory-pressure")
                assert server.is_server_ready()  # probes are never refused
                backend.release.set()
        finally:
            backend.release.set()
        assert len(answers) == 2  # the calls held answered, and released their bytes
        again = server.infer(MODEL, [_tensor_input()])
        assert again.as_numpy("logits") is not None
        samples = parse(client.get("/metrics").text)
        assert value(samples, "requests_rejected_total", reason="inflight_bytes") == 2
        refused_lines = [line for line in lines(logs) if line.get("error_type")]
        assert [line["error_type"] for line in refused_lines] == ["InflightBytesException"]


def test_grpc_calls_beyond_grpc_max_calls_are_resource_exhausted_but_probes_answer() -> None:
    backend = ControlledBackend(blocked=True)
    settings = {"model_warmup": False, "grpc_max_calls": 2, "max_queue_size": 16}
    with grpc_app(backend, **settings) as (client, server), json_log_capture() as logs:
        try:
            with held_calls(client, server, 2):
                for call in (
                    lambda: server.infer(MODEL, [_tensor_input()]),
                    lambda: server.get_model_metadata(MODEL),
                ):
                    busy = refusal(call)
                    assert busy.status() == "StatusCode.RESOURCE_EXHAUSTED"
                    assert "GRPC_MAX_CALLS" in busy.message()
                assert server.is_server_live() and server.is_server_ready()
                backend.release.set()
        finally:
            backend.release.set()
        assert server.get_model_metadata(MODEL).name == MODEL  # room again
        samples = parse(client.get("/metrics").text)
        assert value(samples, "requests_rejected_total", reason="connection_limit") == 2
        assert infer_count(client, "RESOURCE_EXHAUSTED") == 1
        kinds = [line["error_type"] for line in lines(logs) if line.get("error_type")]
        assert kinds == ["TooManyCallsException"]
        assert errors(logs) == []


# --- Failures ---------------------------------------------------------------------------------


def test_a_failed_forward_pass_is_internal_with_the_gateways_detail() -> None:
    backend = ControlledBackend()
    with grpc_app(backend) as (client, server), json_log_capture() as logs:
        backend.fail_with = RuntimeError("boom")
        failed = refusal(lambda: server.infer(MODEL, [grpc_images(cat_jpeg())]))
        assert failed.status() == "StatusCode.INTERNAL"
        assert failed.message() == "The model failed on this input."
        (line,) = lines(logs)
        assert line["level"] == "ERROR" and "RuntimeError" in json.dumps(line["exception"])
        assert infer_count(client, "INTERNAL") == 1


def test_an_unexpected_error_is_internal_without_internals_and_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("secret detail from /srv/models")

    monkeypatch.setattr(grpc_codec, "encode_infer_response", broken)
    with grpc_app(ControlledBackend()) as (client, server), json_log_capture() as logs:
        failed = refusal(lambda: server.infer(MODEL, [grpc_images(cat_jpeg())]))
        assert failed.status() == "StatusCode.INTERNAL"
        assert failed.message().startswith("Internal server error (request id ")
        assert "secret" not in failed.message()
        (line,) = errors(logs)
        assert line["endpoint"] == INFER and line["status_code"] == 13
        assert "secret detail" in json.dumps(line["exception"])
        assert line["request_id"] in failed.message()
        assert infer_count(client, "INTERNAL") == 1


# --- Telemetry ----------------------------------------------------------------------------------


def test_each_call_is_a_server_span_continuing_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    port = free_port()
    app = create_app(
        make_settings(grpc_port=port),
        model_loader=controlled_loader(ControlledBackend()),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    with serving(app, port) as (_, server), json_log_capture() as logs:
        server.infer(MODEL, [grpc_images(cat_jpeg())], headers={"traceparent": TRACEPARENT})
        wait_until(lambda: bool(lines(logs)), what="the call's access line")
    (line,) = lines(logs)
    assert (line["trace_id"], line["method"], line["status_code"]) == (TRACE_ID, "gRPC", 0)
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "inference.GRPCInferenceService/ModelInfer"]
    assert call.kind is SpanKind.SERVER
    assert format(call.context.trace_id, "032x") == TRACE_ID
    assert call.parent is not None and format(call.parent.span_id, "016x") == PARENT_ID
    assert dict(call.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
    }
    (model_span,) = [s for s in spans if s.name == "model_inference"]
    assert model_span.parent is not None and model_span.parent.span_id == call.context.span_id


def test_grpc_calls_are_tail_sampled_like_http() -> None:
    """With TRACE_SAMPLE_RATIO=0 a healthy call exports nothing and logs
    trace_sampled false; a failed one is kept whole; a caller's sampled traceparent
    is kept."""
    exporter = InMemorySpanExporter()
    port = free_port()
    backend = ControlledBackend()
    app = create_app(
        make_settings(
            grpc_port=port, trace_sample_ratio=0.0, trace_slow_ms=600_000.0, model_warmup=False
        ),
        model_loader=controlled_loader(backend),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    with serving(app, port) as (_, server), json_log_capture() as logs:
        server.infer(MODEL, [grpc_images(cat_jpeg())])
        wait_until(lambda: bool(lines(logs)), what="the healthy call's access line")
        assert exporter.get_finished_spans() == ()
        assert lines(logs)[0]["trace_sampled"] is False
        server.infer(MODEL, [grpc_images(cat_jpeg())], headers={"traceparent": TRACEPARENT})
        wait_until(lambda: len(lines(logs)) == 2, what="the sampled call's access line")
        kept = {
            f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()
            if s.name != "inference_batch"  # the batch's own trace, kept with it
        }  # fmt: skip
        assert kept == {TRACE_ID}
        backend.fail_with = RuntimeError("broken")
        refusal(lambda: server.infer(MODEL, [grpc_images(cat_jpeg())]))
        wait_until(lambda: len(lines(logs)) == 3, what="the failed call's access line")
        failed = lines(logs)[2]
        assert failed["trace_sampled"] is True
        names = {
            s.name for s in exporter.get_finished_spans()
            if f"{s.context.trace_id:032x}" == failed["trace_id"]
        }  # fmt: skip
        assert {"inference.GRPCInferenceService/ModelInfer", "model_inference"} <= names


@pytest.mark.parametrize("sampler", ["always_off", "always_on"])
def test_under_head_sampling_a_calls_exemplar_names_only_a_sampled_trace(sampler: str) -> None:
    """With ``OTEL_TRACES_SAMPLER`` (no tail sampling's ruling) a call's latency carries
    its trace id as an exemplar only when its span was sampled, so exported."""
    exporter = InMemorySpanExporter()
    port = free_port()
    app = create_app(
        make_settings(grpc_port=port, otel_traces_sampler=sampler),
        model_loader=controlled_loader(ControlledBackend()),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    with serving(app, port) as (client, server), json_log_capture() as logs:
        server.infer(MODEL, [grpc_images(cat_jpeg())])
        wait_until(lambda: bool(lines(logs)), what="the call's access line")
        scrape = client.get("/metrics", headers={"accept": "application/openmetrics-text"}).text
    found = [
        line for line in scrape.splitlines()
        if line.startswith("grpc_request_duration_seconds_bucket") and "trace_id" in line
    ]  # fmt: skip
    exported = {
        f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()
        if s.name == "inference.GRPCInferenceService/ModelInfer"
    }  # fmt: skip
    if sampler == "always_off":
        assert (found, exported) == ([], set())
    else:
        (trace_id,) = exported
        assert len(found) == 1 and f'trace_id="{trace_id}"' in found[0]


def test_grpc_series_exist_only_when_the_service_runs(fake_client: TestClient) -> None:
    samples = parse(fake_client.get("/metrics").text)
    assert not [name for name, _ in samples if name.startswith("grpc_")]


# --- Start and stop -----------------------------------------------------------------------------


def test_calls_in_flight_finish_when_the_app_stops() -> None:
    backend = ControlledBackend(blocked=True)
    port = free_port()
    app = controlled_app(backend, grpc_port=port, model_warmup=False)
    answers: list[Any] = []
    client = TestClient(app)
    client.__enter__()
    ready_client(client)
    server = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")

    def infer() -> None:
        answers.append(server.infer(MODEL, [grpc_images(cat_jpeg())]))

    def stops_taking_calls() -> bool:
        probe = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            probe.is_server_live(client_timeout=2)
        except InferenceServerException:
            return True
        finally:
            probe.close()
        return False

    held = threading.Thread(target=infer)
    stopping = threading.Thread(target=client.__exit__, args=(None, None, None))
    try:
        held.start()
        wait_until(backend.entered.is_set, what="the call to reach the model")
        stopping.start()
        wait_until(stops_taking_calls, what="the service to stop taking calls")
    finally:
        backend.release.set()
        held.join(timeout=30)
        stopping.join(timeout=30)
        server.close()
    (answer,) = answers
    scores = answer.as_numpy("logits")
    assert scores is not None and scores.shape == (1, 1000)


def test_grpc_packages_are_imported_only_when_the_service_runs() -> None:
    """Without ``GRPC_PORT`` the ``grpc`` extra is not needed: nothing imports it."""
    probe = (
        "import sys, inference_gateway.main; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'tritonclient'}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_PORT"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_port_already_taken_fails_the_start_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = controlled_app(ControlledBackend(), grpc_port=port)
        refused = pytest.raises(RuntimeError, match=f"GRPC_PORT: cannot listen on 127.0.0.1:{port}")
        with refused, TestClient(app):
            pass


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_the_grpc_port_is_shared_whenever_serve_starts_several_workers(workers: int) -> None:
    """WORKERS=0 means one worker per core: on a machine with several cores every
    worker binds GRPC_PORT, so the port must be shared then too."""
    from inference_gateway.api.v2.grpc import server_options

    settings = make_settings(workers=workers, grpc_port=50051)
    options = dict(server_options(settings))
    assert options["grpc.so_reuseport"] == (1 if settings.effective_workers > 1 else 0)
    assert options["grpc.max_receive_message_length"] == settings.max_body_bytes
