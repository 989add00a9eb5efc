"""Live changes to a model repository, on a running server, under load.

A real ``inference-gateway serve`` polls a repository of real ONNX files while client
threads keep predicting. Models and versions are added, replaced, broken and removed
on disk; every request that the old or the new files could answer must be answered.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import onnx
import pytest

from tests.helpers import wait_until
from tests.images import CAT_CLASSES, CAT_PNG
from tests.model_repository import (
    BUILTIN_YAML,
    builtin_onnx,
    shifted_variant,
    write_model,
    write_yaml_model,
)
from tests.servers import GatewayProcess, gateway_process

TENCH, GOLDFISH = 0, 1
PNG = {"content-type": "image/png"}


def _publish(root: Path, name: str, versions: dict[int, onnx.ModelProto]) -> None:
    """Add a whole model directory at once, as a deployment tool would (rename)."""
    staging = root / f".staging-{name}"
    write_yaml_model(staging, name, versions, BUILTIN_YAML)
    (staging / name).rename(root / name)
    staging.rmdir()


def _publish_version(root: Path, name: str, version: int, model: onnx.ModelProto) -> None:
    staging = root / name / f".staging-{version}"
    write_model(staging, model)
    staging.rename(root / name / str(version))


def _replace_file(path: Path, content: onnx.ModelProto | bytes) -> None:
    staging = path.with_name(".staging-model.onnx")
    if isinstance(content, bytes):
        staging.write_bytes(content)
    else:
        onnx.save(content, staging)
    os.replace(staging, path)


def _remove(directory: Path) -> None:
    doomed = directory.with_name(f".removed-{directory.name}")
    directory.rename(doomed)
    shutil.rmtree(doomed)


@dataclass
class Load:
    """Client threads predicting with one model until stopped; what each answer was."""

    url: str
    path: str
    answers: list[tuple[int, int | None]] = field(default_factory=list)  # (status, class)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        body = CAT_PNG.read_bytes()
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for _ in range(5000):  # bounded; the test stops it long before
                if self.stop.is_set():
                    return
                response = client.post(self.path, content=body, headers=PNG)
                top = response.json()["predictions"][0]["class_id"] if response.is_success else None
                with self.lock:
                    self.answers.append((response.status_code, top))

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def classes_since(self, start: int) -> set[int | None]:
        with self.lock:
            return {top for _, top in self.answers[start:]}

    def classes_now(self) -> set[int | None]:
        """The classes of the next few answers, skipping those already in flight (one
        per client thread), so none of them was routed before the caller's change."""
        mark = self.count() + 2
        wait_until(lambda: self.count() >= mark + 4, what=f"answers from {self.path}")
        return self.classes_since(mark)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    root = tmp_path / "models"
    root.mkdir()
    write_yaml_model(root, "a", {1: builtin_onnx()}, BUILTIN_YAML)
    env = {
        "MODEL_REPOSITORY": str(root),
        "MODEL_REPOSITORY_POLL_SECONDS": "0.2",
        "WORKERS": "1",
        "MAX_QUEUE_SIZE": "256",
        "REQUEST_TIMEOUT": "60",
    }
    with gateway_process(env) as gateway:
        yield gateway, root


def _state(gateway: GatewayProcess, name: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/models/{name}", timeout=5)
    return response.json() if response.status_code == 200 else {}  # type: ignore[no-any-return]


def test_add_replace_break_and_remove_models_under_load_without_losing_a_request(
    server: tuple[GatewayProcess, Path],
) -> None:
    gateway, root = server
    builtin = builtin_onnx()
    load_a = Load(gateway.url, "/models/a/predict")
    load_b = Load(gateway.url, "/models/b/predict")
    threads = [threading.Thread(target=load.run) for load in (load_a, load_a, load_b)]
    for thread in threads:
        thread.start()
    try:
        # Add a model: it is served once loaded (404 before: it did not exist).
        _publish(root, "b", {1: builtin})
        wait_until(lambda: _state(gateway, "b").get("state") == "READY", what="b to load")
        assert load_b.classes_now() <= CAT_CLASSES
        # Add a version (the policy serves the latest only): v2 takes over once warm,
        # v1 answers until then.
        _publish_version(root, "a", 2, shifted_variant(builtin, TENCH, 50.0))
        wait_until(lambda: _state(gateway, "a").get("default_version") == "2", what="a v2")
        wait_until(
            lambda: [v["version"] for v in _state(gateway, "a")["versions"]] == ["2"],
            what="a v1 to be unloaded",
        )
        assert load_a.classes_now() == {TENCH}
        # Replace v2's file: the new one answers once warm.
        _replace_file(root / "a" / "2" / "model.onnx", shifted_variant(builtin, GOLDFISH, 50.0))
        wait_until(lambda: GOLDFISH in load_a.classes_since(load_a.count() - 1), what="new v2")
        assert load_a.classes_now() == {GOLDFISH}
        # A broken replacement: the working files keep serving, and the model says why.
        _replace_file(root / "a" / "2" / "model.onnx", b"half a model")
        wait_until(
            lambda: _state(gateway, "a")["versions"][0].get("reload_error") is not None,
            what="the failed update to show",
        )
        assert load_a.classes_now() == {GOLDFISH}
        assert "model.onnx" in _state(gateway, "a")["versions"][0]["reload_error"]
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
        # The broken files were tried once; the first copy of v2 was unloaded for the
        # second when that one took over.
        assert 'model_load_failures_total{model_name="a",model_version="2"} 1.0' in metrics
        assert 'model_unloads_total{model_name="a",model_version="2"} 1.0' in metrics
        # Remove v2 (v1 is the latest again): v2 answers until v1 is warm.
        _remove(root / "a" / "2")
        wait_until(lambda: _state(gateway, "a").get("default_version") == "1", what="a v1 back")
        assert load_a.classes_now() <= CAT_CLASSES
        # Remove a whole model: what was routed to it is answered, then 404.
        _remove(root / "b")
        wait_until(lambda: not _state(gateway, "b"), what="b to be gone")
    finally:
        for load in (load_a, load_b):
            load.stop.set()
        for thread in threads:
            thread.join(timeout=60)

    statuses_a = Counter(status for status, _ in load_a.answers)
    assert statuses_a.keys() == {200}, statuses_a  # not one request of a failed
    statuses_b = [status for status, _ in load_b.answers]
    # b: 404 until it existed (then 503 not-ready while it loaded), 200 while it was
    # served, 404 after; never a failure.
    first_ok, last_ok = statuses_b.index(200), len(statuses_b) - statuses_b[::-1].index(200)
    assert set(statuses_b[:first_ok]) <= {404, 503}
    assert set(statuses_b[first_ok:last_ok]) == {200}
    assert set(statuses_b[last_ok:]) <= {404}
    log = gateway.log_lines()
    assert any("Model update failed; the previous files keep serving" in line for line in log)
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    # Removed versions leave no series behind; the one serving has its own.
    assert 'model_name="b"' not in metrics and 'model_version="2"' not in metrics
    assert 'model_loaded{model_name="a",model_version="1"} 1.0' in metrics


# --- Two workers, gRPC traffic, files written in place ------------------------------------


def _write_in_place(path: Path, model: onnx.ModelProto) -> None:
    """Overwrite ``path`` where it is, as an editor or ``cp`` does: truncated, then
    written in pieces (a poll may see it half-written)."""
    data = model.SerializeToString()
    piece = len(data) // 4 + 1
    with path.open("wb") as file:
        for start in range(0, len(data), piece):
            file.write(data[start : start + piece])
            file.flush()
            os.fsync(file.fileno())


@dataclass
class GrpcLoad:
    """One client thread calling ModelInfer over gRPC until stopped: (code, top class)."""

    port: int
    model: str
    answers: list[tuple[str, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        import numpy as np
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        from tests.oip import grpc_images

        for _ in range(5000):  # bounded; the test stops it long before
            if self.stop.is_set():
                return
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.port}")  # a new channel:
            try:  # each worker in turn
                result = client.infer(self.model, [grpc_images(CAT_PNG.read_bytes())])
                scores = result.as_numpy("logits")
                answer = ("OK", int(np.argmax(scores[0])) if scores is not None else None)
            except InferenceServerException as exc:
                answer = (str(exc.status()), None)
            finally:
                client.close()
            with self.lock:
                self.answers.append(answer)

    def classes_now(self) -> set[int | None]:
        with self.lock:
            mark = len(self.answers) + 1
        wait_until(lambda: len(self.answers) >= mark + 6, what="gRPC answers")
        with self.lock:
            return {top for _, top in self.answers[mark:]}


def test_two_workers_follow_in_place_writes_under_http_and_grpc_traffic(tmp_path: Path) -> None:
    """``serve --workers 2`` with gRPC: a version's file overwritten in place (not
    renamed) and a version directory written file by file are picked up by both
    workers; while they change, no call on either protocol fails."""
    from tests.servers import free_port

    root = tmp_path / "models"
    root.mkdir()
    builtin = builtin_onnx()
    write_yaml_model(root, "a", {1: builtin}, BUILTIN_YAML)
    grpc_port = free_port()
    env = {
        "MODEL_REPOSITORY": str(root),
        "MODEL_REPOSITORY_POLL_SECONDS": "0.2",
        "WORKERS": "2",
        "GRPC_PORT": str(grpc_port),
        "MAX_QUEUE_SIZE": "256",
        "REQUEST_TIMEOUT": "60",
    }
    with gateway_process(env) as gateway:
        http_load = Load(gateway.url, "/models/a/predict")
        grpc_load = GrpcLoad(grpc_port, "a")
        threads = [threading.Thread(target=load.run) for load in (http_load, grpc_load)]
        for thread in threads:
            thread.start()
        try:
            assert http_load.classes_now() <= CAT_CLASSES
            # v1's file overwritten in place: both workers serve the new graph.
            _write_in_place(root / "a" / "1" / "model.onnx", shifted_variant(builtin, TENCH, 50.0))
            wait_until(
                lambda: http_load.classes_now() == {TENCH} and grpc_load.classes_now() == {TENCH},
                timeout=120, what="both workers to serve the file written in place",
            )  # fmt: skip
            # A new version written file by file where it will be served (no rename).
            version = root / "a" / "2"
            version.mkdir()
            _write_in_place(version / "model.onnx", shifted_variant(builtin, GOLDFISH, 50.0))
            wait_until(
                lambda: http_load.classes_now() == {GOLDFISH}
                and grpc_load.classes_now() == {GOLDFISH},
                timeout=120, what="both workers to serve version 2",
            )  # fmt: skip
        finally:
            for load in (http_load, grpc_load):
                load.stop.set()
            for thread in threads:
                thread.join(timeout=60)
        ready = [
            json.loads(line)
            for line in gateway.log_lines()
            if line.startswith("{") and '"Model ready"' in line
        ]
    assert Counter(status for status, _ in http_load.answers).keys() == {200}
    assert Counter(code for code, _ in grpc_load.answers).keys() == {"OK"}
    # Both workers loaded version 2 (and v1's new file before it).
    assert len({line["pid"] for line in ready if line["model_version"] == "2"}) == 2
