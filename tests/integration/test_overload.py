"""Overload and model faults against a real server process, made deterministic.

The server is ``inference-gateway serve --app tests.gated_app:app``: the whole gateway
over a backend the test blocks, slows or poisons through files (tests/gated_app.py).
Every scenario ends by checking exact accounting: the client's count of each status
equals the server's ``http_requests_total`` for it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from inference_gateway.api.shedding import LOG_INTERVAL_SECONDS
from tests.gate import Gate, fill_queue, predict
from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.scrape import Samples, parse, value
from tests.servers import GatewayProcess, gateway_process, read_http_response

pytestmark = pytest.mark.integration

QUEUE = 8
JPEG = {"content-type": "image/jpeg"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(gate: Gate) -> Iterator[GatewayProcess]:
    env = {
        "GATE_DIR": str(gate.dir),
        "WORKERS": "1",  # one queue, so admission counts are exact
        "MAX_BATCH_SIZE": "1",
        "MAX_QUEUE_SIZE": str(QUEUE),
        "REQUEST_TIMEOUT": "30",
        "MODEL_STALL_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    with gateway_process(env, args=("--app", "tests.gated_app:app")) as process:
        yield process


@pytest.fixture(autouse=True)
def _reset_gate(gate: Gate) -> Iterator[None]:
    gate.open()
    gate.delay(0)
    yield
    gate.open()
    gate.delay(0)


def _metrics(server: GatewayProcess) -> Samples:
    return parse(httpx.get(f"{server.url}/metrics", timeout=10).text)


def _predict_counts(samples: Samples) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, labels), number in samples.items():
        label = dict(labels)
        if name == "http_requests_total" and label.get("endpoint") == "/predict":
            counts[label["status"]] += int(number)
    return counts


def _server_delta(before: Samples, after: Samples) -> Counter[str]:
    delta = _predict_counts(after)
    delta.subtract(_predict_counts(before))
    return +delta  # drops zero entries


def test_a_full_queue_admits_exactly_its_size_and_refuses_the_rest_at_once(
    server: GatewayProcess, gate: Gate
) -> None:
    before = _metrics(server)
    calls_before = len(gate.calls())
    rss_before = server.rss_bytes()
    statuses: list[int] = []
    with ThreadPoolExecutor(QUEUE + 1) as pool:
        admitted = fill_queue(gate, server.url, pool, QUEUE)
        # The queue is full and the model blocked: everything now is refused at once.
        refused = [predict(server.url) for _ in range(40)]
        for response in refused:
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["reason"] == "queue_full"
        held_rss = server.rss_bytes()
        gate.open()
        statuses = [future.result().status_code for future in admitted]
    assert statuses == [200] * (QUEUE + 1)
    # Refused requests were never computed; admitted ones exactly once each.
    assert len(gate.calls()) == calls_before + QUEUE + 1
    after = _metrics(server)
    assert _server_delta(before, after) == Counter({"200": QUEUE + 1, "503": 40})
    assert (
        value(after, "requests_rejected_total", reason="queue_full")
        - value(before, "requests_rejected_total", reason="queue_full")
        == 40
    )
    assert held_rss - rss_before < 64 * MIB
    # No backlog: the next request is served at once, with nothing queued.
    assert (
        value(after, "inference_queue_size", model_name="efficientnet-lite0", model_version="1")
        == 0
    )
    assert predict(server.url).status_code == 200


V2_INFER = "/v2/models/efficientnet-lite0/infer"


def _refused_lines(server: GatewayProcess, since: int) -> tuple[int, int]:
    """The flood's refusals logged one line each, and those counted in the door's lines,
    in the log's lines from ``since`` on."""
    each, at_door = 0, 0
    for line in server.log_lines()[since:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "Request completed" and str(entry.get("request_id")).startswith(
            "flood-"
        ):
            each += 1
        if entry.get("message") == "Requests refused before the app":
            at_door += entry["refused"]
    return each, at_door


def test_a_flood_of_refusals_is_answered_at_the_door_counted_alike_on_a_kept_connection(
    server: GatewayProcess, gate: Gate
) -> None:
    """Under overload the HTTP protocol answers what admission refuses before the app
    runs (api/shedding.py): the same 503s, bodies and headers as the app's, every one
    counted in the same metrics, the first TRACE_REFUSED_PER_SECOND (10) of each second
    still through the app with a line each and the rest summed in one line a second;
    the dropped bodies (sized or chunked, pipelined or not) never desynchronise the
    connection, which serves the next request once the model is free."""
    # An earlier test's refusals at the door are counted in a line written within a
    # second: let it out before this test's lines are read.
    time.sleep(LOG_INTERVAL_SECONDS + 0.5)
    before = _metrics(server)
    log_start = len(server.log_lines())
    sent = Counter[str]()
    with ThreadPoolExecutor(QUEUE + 1) as pool:
        admitted = fill_queue(gate, server.url, pool, QUEUE)
        started = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(30):
                rid = f"flood-{i}"
                if i % 3 == 2:  # the Open Inference Protocol's route and error body
                    response = client.post(
                        V2_INFER, json={"inputs": []}, headers={"x-request-id": rid}
                    )
                    assert response.status_code == 503
                    assert set(response.json()) == {"error"}
                    sent[V2_INFER] += 1
                else:
                    chunks = iter([cat_jpeg()[:1000], cat_jpeg()[1000:]])
                    response = client.post(
                        "/predict",
                        content=chunks if i % 3 == 1 else cat_jpeg(),  # chunked, or sized
                        headers={**JPEG, "x-request-id": rid},
                    )
                    assert response.status_code == 503
                    problem = response.json()
                    assert problem["reason"] == "queue_full"
                    assert problem["request_id"] == rid
                    assert response.headers["content-type"] == "application/problem+json"
                    sent["/predict"] += 1
                assert response.headers["x-request-id"] == rid
                assert response.headers["retry-after"] == "1"
                assert "date" in response.headers
            # Two refusals pipelined in one write: two answers, in order.
            with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
                one = (
                    f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(cat_jpeg())}\r\n"
                ).encode()
                raw.sendall(b"".join(one + f"X-Request-Id: flood-p{n}\r\n\r\n".encode()
                                     + cat_jpeg() for n in (1, 2)))  # fmt: skip
                for n in (1, 2):
                    status, head, _ = read_http_response(raw)
                    assert status == 503 and f"x-request-id: flood-p{n}".encode() in head.lower()
                sent["/predict"] += 2
                seconds = time.monotonic() - started
                gate.open()
                assert [f.result().status_code for f in admitted] == [200] * (QUEUE + 1)
                # The same connections serve what comes next.
                assert client.post("/predict", content=cat_jpeg(), headers=JPEG).status_code == 200
                raw.sendall(one + b"\r\n" + cat_jpeg())
                assert read_http_response(raw)[0] == 200
    after = _metrics(server)
    total = sum(sent.values())
    for endpoint, count in sent.items():
        assert value(after, "http_requests_total", method="POST", endpoint=endpoint.replace(
            "efficientnet-lite0", "{name}"), status="503") - value(
            before, "http_requests_total", method="POST", endpoint=endpoint.replace(
            "efficientnet-lite0", "{name}"), status="503") == count, endpoint  # fmt: skip
    assert (
        value(after, "requests_rejected_total", reason="queue_full")
        - value(before, "requests_rejected_total", reason="queue_full")
        == total
    )
    assert (
        value(after, "http_request_exceptions_total", endpoint="/predict",
              exception_type="QueueFullException")
        - value(before, "http_request_exceptions_total", endpoint="/predict",
                exception_type="QueueFullException")
        == sent["/predict"]
    )  # fmt: skip
    # Every refusal logged: each on its own line (at most 10 a second), or counted in
    # the door's line (written within a second).
    wait_until(lambda: sum(_refused_lines(server, log_start)) == total, what="every refusal logged")
    each, at_door = _refused_lines(server, log_start)
    assert at_door > 0
    assert each <= 10 * (int(seconds) + 2)


def test_a_client_silent_after_a_refusal_at_the_door_is_closed_as_after_any_answer(
    server: GatewayProcess, gate: Gate
) -> None:
    """A refusal at the door leaves the connection reading the refused body: a client
    that sends none (or stops) is closed after uvicorn's keep-alive timeout (5 s), as
    after an answer from the app, instead of holding the socket."""
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with ThreadPoolExecutor(QUEUE + 1) as pool:
        admitted = fill_queue(gate, server.url, pool, QUEUE)
        try:
            answered = []
            for _ in range(12):  # past the second's allowance through the app (10)
                raw = socket.create_connection(("127.0.0.1", port))
                raw.sendall(head + b"x" * 1000)  # and no more of the body
                answered.append((raw, read_http_response(raw)))
            status, reply, _ = answered[-1][1]
            assert status == 503 and b"x-request-id" in reply.lower()
            for raw, _ in answered:
                raw.settimeout(30)  # a connection kept open fails here
                assert raw.recv(1) == b""  # closed by the server
                raw.close()
        finally:
            gate.open()
            assert [f.result().status_code for f in admitted] == [200] * (QUEUE + 1)


def test_far_past_saturation_every_result_meets_its_deadline_and_the_rest_are_503_or_504(
    server: GatewayProcess, gate: Gate
) -> None:
    # 20 ms per image, one at a time: saturation is ~50/s. 48 clients with a 400 ms
    # deadline offer several times that.
    gate.delay(20)
    deadline_ms = 400
    before = _metrics(server)
    rss_before = server.rss_bytes()
    stop = threading.Event()
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(25):
                if stop.is_set():
                    return
                response = http.post(
                    "/predict",
                    content=cat_jpeg(),
                    headers={**JPEG, "x-request-timeout-ms": str(deadline_ms)},
                )
                with lock:
                    responses.append(response)

    threads = [threading.Thread(target=client) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    rss_after = server.rss_bytes()
    statuses = Counter(str(r.status_code) for r in responses)
    assert set(statuses) <= {"200", "503", "504"}, statuses
    assert statuses["200"] > 0 and statuses["503"] > 0, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"]
            assert response.json()["reason"] in {"queue_full", "deadline_unreachable"}
        if response.status_code == 200:
            # The promise: a request answered with a result had it within its deadline,
            # by the server's own clock (which enforces the deadline: past it, a 504).
            # Writing the response comes after: the deadline bounds the wait for the
            # model, not the event loop's turn to send (docs/operations.md). Each stage
            # is reported rounded to the microsecond.
            timings = response.json()["timings_ms"]
            stages = timings["preprocess"] + timings["queue"] + timings["inference"]
            assert stages <= deadline_ms + 3 * 0.0005, timings
    assert rss_after - rss_before < 64 * MIB
    after = _metrics(server)
    assert _server_delta(before, after) == statuses
    # After the storm: nothing queued, and the next request is served normally.
    assert (
        value(after, "inference_queue_size", model_name="efficientnet-lite0", model_version="1")
        == 0
    )
    gate.delay(0)
    assert predict(server.url).status_code == 200


def test_a_hanging_model_times_requests_out_and_fails_readiness_until_it_recovers(
    server: GatewayProcess, gate: Gate
) -> None:
    before = _metrics(server)
    assert httpx.get(f"{server.url}/ready").status_code == 200
    gate.close()
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(predict, server.url, 1500)
        # The forward pass now runs past MODEL_STALL_SECONDS (1 s): not ready.
        wait_until(
            lambda: httpx.get(f"{server.url}/ready").status_code == 503, what="/ready to fail"
        )
        ready = httpx.get(f"{server.url}/ready")
        assert ready.json()["type"] == "urn:inference-gateway:problem:model-stalled"
        assert ready.headers["retry-after"]
        timed_out = stuck.result()
        assert timed_out.status_code == 504
        assert timed_out.json()["type"] == "urn:inference-gateway:problem:timeout"
        # Liveness is not readiness: the process itself is fine.
        assert httpx.get(f"{server.url}/health").status_code == 200
    gate.open()
    wait_until(lambda: httpx.get(f"{server.url}/ready").status_code == 200, what="recovery")
    assert predict(server.url).status_code == 200
    assert _server_delta(before, _metrics(server)) == Counter({"504": 1, "200": 1})


def test_an_input_that_breaks_the_model_fails_alone(server: GatewayProcess, gate: Gate) -> None:
    from PIL import Image

    from tests.images import encode

    before = _metrics(server)
    blank = encode(Image.new("RGB", (64, 64), (0, 0, 0)), "PNG")
    response = httpx.post(
        f"{server.url}/predict", content=blank, headers={"content-type": "image/png"}
    )
    assert response.status_code == 500
    assert response.json()["type"] == "urn:inference-gateway:problem:inference-failed"
    assert "poisoned" not in response.text  # no internals reach the client
    assert predict(server.url).status_code == 200
    after = _metrics(server)
    assert _server_delta(before, after) == Counter({"500": 1, "200": 1})
    assert (
        value(
            after,
            "model_inference_errors_total",
            model_name="efficientnet-lite0",
            model_version="1",
            error_type="RuntimeError",
        )
        - value(
            before,
            "model_inference_errors_total",
            model_name="efficientnet-lite0",
            model_version="1",
            error_type="RuntimeError",
        )
        == 1
    )


def test_an_endless_upload_is_cut_off_without_the_server_holding_it(
    server: GatewayProcess,
) -> None:
    """A chunked upload far over MAX_BODY_BYTES: the server answers 413 after the limit
    and closes, and its memory does not grow with what the client keeps sending."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    rss_before = server.rss_bytes()
    chunk = b"\x00" * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    offered = 256  # MiB, 25 times the 10 MiB limit
    sent = 0
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(offered):
                sock.sendall(framed)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: that is the point
        try:
            while part := sock.recv(65536):
                reply += part
        except ConnectionResetError:
            pass
    held = server.rss_bytes() - rss_before
    assert sent < offered, "the server read a 256 MiB upload to the end"
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert held < 64 * MIB
    assert httpx.get(f"{server.url}/ready").status_code == 200
