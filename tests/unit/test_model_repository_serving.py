"""Users' own models, served from a model repository through the whole HTTP stack.

The repository holds real ONNX files made from the built-in network with other input
conventions baked into the graph (tests/model_repository.py). Served with the matching
``model.yaml``, each must answer real photos as the built-in model does: the same top
classes with the same confidences, which proves every preprocessing key is honoured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from inference_gateway.app import create_app
from tests import scrape
from tests.helpers import json_log_capture, make_settings, ready_client, wait_until
from tests.images import CAT_PNG, COFFEE_PNG, ROCKET_JPG
from tests.model_repository import (
    BATCH1_NAMED,
    BGR_CAFFE,
    BUILTIN_YAML,
    NHWC_IMAGENET,
    builtin_onnx,
    shifted_variant,
    write_hf_model,
    write_yaml_model,
)
from tests.servers import free_port
from tests.unit.test_metrics import CONTRACT

PHOTOS = (CAT_PNG, COFFEE_PNG, ROCKET_JPG)
#: Version 2 of "nhwc" always answers class 0 ("tench").
TENCH = 0
PNG = {"content-type": "image/png"}
VARIANTS = {"nhwc": NHWC_IMAGENET, "bgr": BGR_CAFFE, "batch1": BATCH1_NAMED}
LITE_V1 = {"model_name": "lite", "model_version": "1"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three models of other conventions (one with two versions) and a Hugging Face
    export with no model.yaml."""
    root = tmp_path_factory.mktemp("repository")
    builtin = builtin_onnx()
    for name, convention in VARIANTS.items():
        variant = convention.build(builtin)
        versions = {1: variant}
        config = convention.model_yaml()
        if name == "nhwc":
            versions[2] = shifted_variant(variant, TENCH, 50.0)
            config["versions"] = {"all": True}
        write_yaml_model(root, name, versions, config)
    write_hf_model(root, "hf-optimum", flat=True)
    return root


@pytest.fixture(scope="module")
def builtin_client() -> Iterator[TestClient]:
    """The built-in model, as `make run` serves it."""
    with TestClient(create_app(make_settings(), configure_logging=False)) as client:
        yield ready_client(client)


@pytest.fixture(scope="module")
def repo_client(repository: Path) -> Iterator[TestClient]:
    """The gateway serving the repository."""
    app = create_app(make_settings(model_repository=repository), configure_logging=False)
    with TestClient(app) as client:
        yield ready_client(client)


def _predict(client: TestClient, path: str, photo: Path) -> dict[str, object]:
    response = client.post(
        path, content=photo.read_bytes(), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _top(body: dict[str, object]) -> list[tuple[int, float]]:
    predictions = body["predictions"]
    assert isinstance(predictions, list)
    return [(p["class_id"], p["confidence"]) for p in predictions]


@pytest.mark.parametrize("name", [*VARIANTS, "hf-optimum"])
def test_each_convention_answers_as_the_builtin_model(
    builtin_client: TestClient, repo_client: TestClient, name: str
) -> None:
    path = f"/models/{name}/versions/1/predict"
    for photo in PHOTOS:
        expected = _top(_predict(builtin_client, "/predict", photo))
        got = _predict(repo_client, path, photo)
        assert got["model"] == {"name": name, "version": "1", "backend": "onnxruntime"}
        classes = [c for c, _ in _top(got)]
        assert classes[0] == expected[0][0], photo.name
        # The same confidences: a key applied wrongly (channel order, mean, scale) moves
        # them even where the top class survives.
        assert np.allclose([p for _, p in _top(got)], [p for _, p in expected], atol=2e-3)


def test_two_versions_answer_differently_and_the_default_is_the_highest(
    repo_client: TestClient,
) -> None:
    v1 = _predict(repo_client, "/models/nhwc/versions/1/predict", CAT_PNG)
    v2 = _predict(repo_client, "/models/nhwc/versions/2/predict", CAT_PNG)
    default = _predict(repo_client, "/models/nhwc/predict", CAT_PNG)
    assert _top(v1)[0][0] != TENCH and _top(v2)[0][0] == TENCH
    assert default["model"] == {"name": "nhwc", "version": "2", "backend": "onnxruntime"}
    assert _top(default)[0][0] == TENCH


def test_models_lists_every_model_version_and_its_configuration(repo_client: TestClient) -> None:
    listing = repo_client.get("/models").json()
    models = {m["name"]: m for m in listing["models"]}
    assert set(models) == {"batch1", "bgr", "hf-optimum", "nhwc"}
    assert all(m["state"] == "READY" and m["reason"] is None for m in models.values())
    assert [v["version"] for v in models["nhwc"]["versions"]] == ["1", "2"]
    assert models["nhwc"]["default_version"] == "2"
    (nhwc_v1, _) = models["nhwc"]["versions"]
    assert nhwc_v1["input"] == {"width": 224, "height": 224, "layout": "NHWC", "color": "RGB"}
    assert nhwc_v1["labels"] == 1000 and nhwc_v1["backend"] == "onnxruntime"
    assert models["batch1"]["versions"][0]["batching"]["max_batch_size"] == 1
    assert models["bgr"]["versions"][0]["input"]["color"] == "BGR"
    assert repo_client.get("/models/bgr").json() == models["bgr"]


def test_ready_lists_each_model_and_predict_needs_a_default(repo_client: TestClient) -> None:
    ready = repo_client.get("/ready")
    assert ready.status_code == 200
    assert {m["name"]: m["state"] for m in ready.json()["models"]} == {
        "batch1": "READY", "bgr": "READY", "hf-optimum": "READY", "nhwc": "READY",
    }  # fmt: skip
    assert ready.json()["model"] is None
    # Several models and no DEFAULT_MODEL: POST /predict says which exist.
    refused = repo_client.post("/predict", content=CAT_PNG.read_bytes())
    assert refused.status_code == 404
    assert refused.json()["type"] == "urn:inference-gateway:problem:model-not-found"
    assert "batch1, bgr, hf-optimum, nhwc" in refused.json()["detail"]


def test_unknown_models_and_versions_are_404_and_add_no_series(repo_client: TestClient) -> None:
    before = scrape.parse(repo_client.get("/metrics").text)
    for path in (
        "/models/nope/predict",
        "/models/nope/versions/1/predict",
        "/models/nhwc/versions/7/predict",
        "/models/nhwc/versions/x/predict",
    ):
        answer = repo_client.post(path, content=CAT_PNG.read_bytes())
        assert answer.status_code == 404, path
        assert answer.json()["type"] == "urn:inference-gateway:problem:model-not-found"
    assert repo_client.get("/models/nope").status_code == 404
    after = scrape.parse(repo_client.get("/metrics").text)

    def per_model(samples: scrape.Samples) -> set[tuple[str, frozenset[tuple[str, str]]]]:
        return {key for key in samples if any(k == "model_name" for k, _ in key[1])}

    assert per_model(after) == per_model(before)  # not one new model series
    names = {v for _, labels in after for k, v in labels if k in ("model_name", "model_version")}
    assert not names & {"nope", "7", "x"}


def test_per_model_metrics_carry_name_and_version(repo_client: TestClient) -> None:
    before = scrape.parse(repo_client.get("/metrics").text)
    body = _predict(repo_client, "/models/bgr/predict", COFFEE_PNG)
    after = scrape.parse(repo_client.get("/metrics").text)
    label = body["predictions"][0]["label"]  # type: ignore[index]
    model = {"model_name": "bgr", "model_version": "1"}
    key = ("model_predictions_total", frozenset({**model, "class": label}.items()))
    assert after[key] - before.get(key, 0) == 1
    for name, version in [("bgr", "1"), ("nhwc", "1"), ("nhwc", "2"), ("hf-optimum", "1")]:
        labels = {"model_name": name, "model_version": version}
        assert scrape.value(after, "model_loaded", **labels) == 1
        assert scrape.value(after, "model_loads_total", **labels) == 1
        assert scrape.value(after, "model_load_duration_seconds_count", **labels) == 1
    other = ("model_predictions_total", frozenset({"model_name": "nhwc", "model_version": "1",
                                                   "class": label}.items()))  # fmt: skip
    assert after.get(other, 0) == before.get(other, 0)


def test_a_default_model_answers_predict(repository: Path) -> None:
    settings = make_settings(model_repository=repository, default_model="nhwc")
    with TestClient(create_app(settings, configure_logging=False)) as client:
        ready_client(client)
        body = _predict(client, "/predict", CAT_PNG)
        assert body["model"] == {"name": "nhwc", "version": "2", "backend": "onnxruntime"}
        assert client.get("/ready").json()["model"]["name"] == "nhwc"


def test_logs_and_spans_name_the_model_version_that_answered(repository: Path) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(
        make_settings(model_repository=repository),
        span_processors=(SimpleSpanProcessor(exporter),),
        configure_logging=False,
    )
    with TestClient(app) as client, json_log_capture() as logs:
        ready_client(client)
        answered = _predict(client, "/models/nhwc/versions/1/predict", COFFEE_PNG)
        refused = client.post("/models/bgr/predict", content=b"not an image", headers=PNG)
        assert refused.status_code == 400
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    done = [r for r in lines if r["message"] == "Inference completed"]
    assert [(r["model_name"], r["model_version"]) for r in done] == [("nhwc", "1")]
    assert done[0]["prediction_class"] == answered["predictions"][0]["label"]  # type: ignore[index]
    failed = [r for r in lines if r.get("status_code") == 400]
    assert [(r["model_name"], r["model_version"]) for r in failed] == [("bgr", "1")]
    trace_id = answered["trace_id"]
    spans = {
        s.name: s
        for s in exporter.get_finished_spans()
        if s.name in ("preprocess_image", "model_inference")
        and format(s.context.trace_id, "032x") == trace_id
    }
    batches = [s for s in exporter.get_finished_spans() if s.name == "inference_batch"]
    for span in [*spans.values(), *batches[-1:]]:
        assert span.attributes is not None
        assert (span.attributes["model.name"], span.attributes["model.version"]) == ("nhwc", "1")
    assert set(spans) == {"preprocess_image", "model_inference"}


def test_the_metrics_contract_holds_over_a_two_model_repository(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every metric of the contract, with its type and labels, from a gateway serving two
    models: the built-in network and one whose scores are NaN (each answer a 500)."""
    root = tmp_path_factory.mktemp("two-models")
    builtin = builtin_onnx()
    config = {"preprocess": {"scale": 1, "mean": [127] * 3, "std": [128] * 3}}
    write_yaml_model(root, "good", {1: builtin}, config)
    write_yaml_model(root, "nan-scores", {1: shifted_variant(builtin, 3, float("nan"))}, config)
    settings = make_settings(model_repository=root, grpc_port=free_port())  # all of it
    app = create_app(settings, configure_logging=False)
    with TestClient(app) as client:
        ready_client(client)
        assert _predict(client, "/models/good/predict", CAT_PNG)["predictions"]
        failed = client.post(
            "/models/nan-scores/predict", content=CAT_PNG.read_bytes(), headers=PNG
        )
        assert failed.status_code == 500
        junk = client.post("/models/good/predict", content=b"junk", headers=PNG)
        assert junk.status_code == 400
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        family = families[name.removesuffix("_total") if kind == "counter" else name]
        assert family.type == kind, name
        assert {k for s in family.samples for k in s.labels if k != "le"} == labels, name
    models = {s.labels["model_name"] for s in families["model_loaded"].samples if s.value == 1}
    assert models == {"good", "nan-scores"}
    errors = families["model_inference_errors"].samples
    assert [(s.labels["model_name"], s.labels["error_type"]) for s in errors if s.value] == [
        ("nan-scores", "NonFiniteScores")
    ]


def test_a_replacement_that_keeps_failing_says_why_beside_the_serving_copy(
    tmp_path: Path,
) -> None:
    """Files changed under a serving version that fail with an error worth retrying (a
    graph not there yet) are retried beside the serving copy; each failure is counted
    and the last one is shown, with paths relative to the repository, until it loads."""
    write_yaml_model(tmp_path, "lite", {1: builtin_onnx()}, BUILTIN_YAML)
    settings = make_settings(
        model_repository=tmp_path,
        model_repository_poll_seconds=0.1,
        model_load_retry_seconds=0.05,
        model_load_retry_max_seconds=0.2,
        grpc_port=free_port(),
    )
    graph = tmp_path / "lite" / "1" / "model.onnx"
    with TestClient(create_app(settings, configure_logging=False)) as client:
        ready_client(client)
        assert settings.grpc_port is not None
        server = grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
        aside = graph.rename(tmp_path / "model.onnx.aside")  # half-way through a copy

        def failures() -> float:
            samples = scrape.parse(client.get("/metrics").text)
            key = ("model_load_failures_total", frozenset(LITE_V1.items()))
            return samples.get(key, 0.0)

        wait_until(lambda: failures() >= 2, what="the replacement to fail twice")
        (version,) = client.get("/models/lite").json()["versions"]
        assert version["state"] == "READY" and version["reason"] is None
        error = version["reload_error"]
        assert error.startswith("FileNotFoundError: lite/1/model.onnx: no such file"), error
        assert "failed attempt(s)" in error
        metadata = client.get("/v2/models/lite")
        assert metadata.status_code == 200
        assert metadata.json()["parameters"]["reload_error"].startswith(
            "FileNotFoundError: lite/1/model.onnx"
        )
        ready = client.get("/ready")
        assert ready.status_code == 200  # the old copy serves
        (model,) = ready.json()["models"]
        assert model["versions"][0]["reload_error"].startswith("FileNotFoundError: lite/1/")
        for answer in (client.get("/models/lite"), metadata, ready):
            assert str(tmp_path) not in answer.text
        # gRPC's ModelMetadataResponse has no parameters: the rest of it still answers.
        assert server.get_model_metadata("lite", as_json=True)["versions"] == ["1"]
        server.close()
        assert _predict(client, "/models/lite/predict", CAT_PNG)["predictions"]

        aside.rename(graph)  # the copy is complete: the replacement loads and serves
        wait_until(
            lambda: client.get("/models/lite").json()["versions"][0]["reload_error"] is None,
            what="the replacement to serve",
        )
        assert "parameters" not in client.get("/v2/models/lite").json()
        assert _predict(client, "/models/lite/predict", CAT_PNG)["predictions"]
