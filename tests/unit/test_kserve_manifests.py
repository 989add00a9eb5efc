"""The KServe manifests in deploy/kserve/, checked offline (no cluster runs here).

Schema: each YAML document is walked against the classes generated from KServe's and
Kubernetes' OpenAPI definitions (the ``kserve`` SDK's ``kserve.models``, then
``kubernetes.client.models``): every key must be an attribute of its class
(``attribute_map``), every value of the type its class states (``openapi_types``), and
every field the class marks required must be there. Quantities are written as strings
("2", "1Gi"), as the generated classes type them.

The schema is read in a child process: importing ``kserve`` loads its gRPC protobuf
modules, which define the same ``inference.*`` messages as tritonclient's, and one
process cannot hold both (tests/kserve_probe.py runs KServe's client apart for the same
reason). The child is this module run as a script.

Cross-references: what KServe matches between the InferenceServices and the
ServingRuntime, and what the gateway needs from the container (ports, probes, env,
shutdown timing, a read-only root with a writable /tmp).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_gateway.config import Settings
from inference_gateway.shutdown import longest_stop_seconds
from tests.manifests import (
    DOCKERFILE,
    PROJECT_VERSION,
    clear_settings_env,
    settings_from,
)

ROOT = Path(__file__).resolve().parents[2]
KSERVE_DIR = ROOT / "deploy" / "kserve"
#: Where KServe's storage initializer puts what storageUri names.
KSERVE_MODEL_DIR = "/mnt/models"
#: Kubernetes' default when a pod does not say.
DEFAULT_TERMINATION_GRACE_SECONDS = 30
#: The container's probes and the routes they must call.
PROBES = (("readinessProbe", "/ready"), ("livenessProbe", "/health"), ("startupProbe", "/health"))
#: Scalar types of the generated classes, and the Python values YAML gives for them.
SCALARS = {"str", "int", "float", "bool", "object", "datetime", "date", "quantity"}


# --- the schema, read in a child process -------------------------------------------------


def _normalise(type_string: str) -> str:
    """One spelling for both generators: ``list[X]``, ``dict[X]`` (string keys), names."""
    listed = re.fullmatch(r"(?:list|List)\[(.+)\]", type_string)
    if listed:
        return f"list[{_normalise(listed.group(1))}]"
    mapped = re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_string)
    if mapped:
        return f"dict[{_normalise(mapped.group(1) or mapped.group(2))}]"
    return "quantity" if type_string == "ResourceQuantity" else type_string


def _element(type_name: str) -> str:
    """The class or scalar inside any ``list[...]``/``dict[...]`` wrappers."""
    while match := re.fullmatch(r"(?:list|dict)\[(.+)\]", type_name):
        type_name = match.group(1)
    return type_name


def _required_attributes(cls: Any) -> set[str]:
    """Attributes the generated class refuses to leave unset."""
    from pydantic import BaseModel

    if issubclass(cls, BaseModel):  # the kubernetes client's models
        return {name for name, field in cls.model_fields.items() if field.is_required()}
    # kserve's models: their setters raise ValueError for a required attribute set to
    # None while client-side validation is on. Build one with it off, then try each.
    from kserve.configuration import Configuration

    configuration = Configuration()
    configuration.client_side_validation = False
    instance = cls(local_vars_configuration=configuration)
    configuration.client_side_validation = True
    required = set()
    for attribute in cls.openapi_types:
        try:
            setattr(instance, attribute, None)
        except ValueError:
            required.add(attribute)
    return required


def generated_schema(class_names: list[str]) -> dict[str, Any]:
    """Every class reachable from ``class_names``: JSON key -> type and required flag.

    Names that neither package defines are listed under ``unknown``. Imports ``kserve``:
    call it only in a process of its own (the module docstring says why).
    """
    import kserve.models as kserve_models
    import kubernetes.client.models as kubernetes_models

    types: dict[str, dict[str, dict[str, Any]]] = {}
    unknown: set[str] = set()
    pending = list(class_names)
    while pending:
        name = pending.pop()
        if name in types or name in unknown:
            continue
        cls = getattr(kserve_models, name, None) or getattr(kubernetes_models, name, None)
        if cls is None:
            unknown.add(name)
            continue
        required = _required_attributes(cls)
        fields = {}
        for attribute, type_string in cls.openapi_types.items():
            type_name = _normalise(type_string)
            fields[cls.attribute_map[attribute]] = {
                "type": type_name,
                "required": attribute in required,
            }
            if _element(type_name) not in SCALARS:
                pending.append(_element(type_name))
        types[name] = fields
    return {"types": types, "unknown": sorted(unknown)}


# --- the walker ----------------------------------------------------------------------------


def root_class(document: dict[str, Any]) -> str:
    """``serving.kserve.io/v1beta1`` + ``InferenceService`` -> ``V1beta1InferenceService``."""
    version = str(document.get("apiVersion", "")).rsplit("/", 1)[-1]
    return "V" + version[1:] + str(document.get("kind", ""))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar_ok(type_name: str, value: object) -> bool:
    if type_name == "object":
        return True
    if isinstance(value, bool):
        return type_name == "bool"
    if type_name == "int":
        return isinstance(value, int)
    if type_name == "float":
        return isinstance(value, int | float)
    if type_name == "quantity":
        return isinstance(value, str | int | float)
    return isinstance(value, str) and type_name in {"str", "datetime", "date"}


def _got(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def walk(value: object, type_name: str, schema: dict[str, Any], path: str = "") -> list[str]:
    """What in ``value`` does not fit ``type_name``: one line per problem, naming its path."""
    if type_name in SCALARS:
        ok = _scalar_ok(type_name, value)
        return [] if ok else [f"{path or '(document)'}: expected {type_name}, got {_got(value)}"]
    if wrapper := re.fullmatch(r"(list|dict)\[(.+)\]", type_name):
        return _walk_items(value, wrapper.group(1), wrapper.group(2), schema, path)
    return _walk_object(value, type_name, schema, path)


def _walk_items(
    value: object, kind: str, item_type: str, schema: dict[str, Any], path: str
) -> list[str]:
    """A list's items, or a string-keyed mapping's values, each of ``item_type``."""
    if kind == "list" and isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    elif kind == "dict" and isinstance(value, dict):
        items = [(_join(path, str(key)), item) for key, item in value.items()]
    else:
        wanted = "a list" if kind == "list" else "a mapping"
        return [f"{path or '(document)'}: expected {wanted}, got {_got(value)}"]
    return [p for at, item in items for p in walk(item, item_type, schema, at)]


def _walk_object(value: object, type_name: str, schema: dict[str, Any], path: str) -> list[str]:
    """A mapping that one generated class describes."""
    where = path or "(document)"
    if type_name not in schema["types"]:
        return [f"{where}: no generated class {type_name} to check it against"]
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping ({type_name}), got {_got(value)}"]
    return _walk_fields(value, type_name, schema, path)


def _walk_fields(
    value: dict[str, Any], type_name: str, schema: dict[str, Any], path: str
) -> list[str]:
    """A mapping against a generated class: unknown keys, values, required fields."""
    fields = schema["types"][type_name]
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{_join(path, str(key))}: unknown field ({type_name} has no such key)")
        elif item is not None:
            problems += walk(item, fields[key]["type"], schema, _join(path, key))
    problems += [
        f"{_join(path, key)}: missing required field of {type_name}"
        for key, field in fields.items()
        if field["required"] and value.get(key) is None
    ]
    return problems


def check_document(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every problem of one manifest against its generated class."""
    return walk(document, root_class(document), schema)


# --- the manifests ---------------------------------------------------------------------------


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    """(``file#index``, document) for every YAML document under deploy/kserve/."""
    found = []
    for path in sorted(KSERVE_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as stream:
            for index, document in enumerate(yaml.safe_load_all(stream)):
                if document is not None:
                    found.append((f"{path.name}#{index}", document))
    return found


MANIFESTS = load_manifests()
RUNTIMES = {d["metadata"]["name"]: d for _, d in MANIFESTS if d["kind"] == "ServingRuntime"}
SERVICES = [(where, d) for where, d in MANIFESTS if d["kind"] == "InferenceService"]
SERVICE_IDS = [where for where, _ in SERVICES]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The generated classes' schema, from a child process that may import ``kserve``."""
    names = sorted({root_class(document) for _, document in MANIFESTS})
    child = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_kserve_manifests", *names],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(autouse=True)
def _no_settings_from_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from a manifest's env see that env only, not this process's."""
    clear_settings_env(monkeypatch)


# --- cross-references ------------------------------------------------------------------------


def _container(runtime: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = runtime["spec"]["containers"][0]
    return container


def effective_env(runtime: dict[str, Any], service: dict[str, Any]) -> dict[str, str]:
    """The container's environment once KServe merges the InferenceService's env over the
    runtime's (a strategic merge keyed by name: the InferenceService wins)."""
    merged = {e["name"]: e.get("value", "") for e in _container(runtime).get("env", [])}
    model = service["spec"]["predictor"]["model"]
    merged.update({e["name"]: e.get("value", "") for e in model.get("env", [])})
    return merged


def _port_number(port: object, ports: list[dict[str, Any]]) -> object:
    """A probe's port as a number (a named port resolves through the container's ports)."""
    by_name = {p.get("name"): p["containerPort"] for p in ports}
    return by_name.get(port, port) if isinstance(port, str) else port


def runtime_problems(runtime: dict[str, Any]) -> list[str]:
    """What the gateway needs from the runtime's container, whatever the InferenceService."""
    problems = []
    container = _container(runtime)
    if container.get("name") != "kserve-container":
        problems.append("containers[0].name: KServe's convention is kserve-container")
    image = str(container.get("image", ""))
    if image.rsplit(":", 1)[-1] != PROJECT_VERSION:
        problems.append(f"containers[0].image: {image!r} is not tagged {PROJECT_VERSION}")
    if container.get("args") != ["serve"]:
        problems.append("containers[0].args: the image's entrypoint needs ['serve']")
    security = container.get("securityContext", {})
    uid = re.search(r"--uid (\d+)", DOCKERFILE)
    expected = {
        "runAsNonRoot": True,
        "runAsUser": int(uid.group(1)) if uid else None,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
    }
    for key, value in expected.items():
        if security.get(key) != value:
            problems.append(f"securityContext.{key}: {security.get(key)!r}, want {value!r}")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        problems.append("securityContext.capabilities.drop: ALL is not dropped")
    empty_dirs = {v["name"] for v in runtime["spec"].get("volumes", []) if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if mounts.get("/tmp") not in empty_dirs:
        problems.append("volumeMounts: /tmp is not an emptyDir (serve's temporary directories)")
    resources = container.get("resources", {})
    for resource in ("cpu", "memory"):
        requested = resources.get("requests", {}).get(resource)
        if requested is None or requested != resources.get("limits", {}).get(resource):
            problems.append(f"resources: the {resource} request must equal its limit")
    for template in re.findall(r"{{(.*?)}}", json.dumps(container)):
        if template.strip() not in {".Name", ".Namespace"}:
            problems.append(
                f"{{{{{template}}}}}: KServe fills only the InferenceService's metadata"
            )
    return problems


def service_problems(service: dict[str, Any], runtimes: dict[str, dict[str, Any]]) -> list[str]:
    """What KServe matches between the InferenceService and its runtime, and the running
    container's settings against its ports, probes, shutdown timing and models."""
    model = service["spec"]["predictor"]["model"]
    runtime = runtimes.get(model.get("runtime"))
    if runtime is None:
        return [f"model.runtime: {model.get('runtime')!r} names no ServingRuntime here"]
    problems = _selection_problems(service, runtime)
    settings, invalid = settings_from(effective_env(runtime, service))
    if settings is None:
        return problems + invalid
    return (
        problems
        + _port_problems(runtime, settings)
        + _shutdown_problems(service, runtime, settings)
        + _repository_problems(service, settings)
    )


def _selection_problems(service: dict[str, Any], runtime: dict[str, Any]) -> list[str]:
    """What KServe checks before it uses the named runtime for the InferenceService."""
    problems = []
    model = service["spec"]["predictor"]["model"]
    spec = runtime["spec"]
    formats = {(f["name"], f.get("version")) for f in spec["supportedModelFormats"]}
    wanted = (model["modelFormat"]["name"], model["modelFormat"].get("version"))
    if wanted not in formats:  # versions compare whole: "1" is not "1.0" nor absent
        problems.append(f"model.modelFormat: {wanted} is not in the runtime's {sorted(formats)}")
    if model.get("protocolVersion") not in spec["protocolVersions"]:
        problems.append(f"model.protocolVersion: {model.get('protocolVersion')!r} not offered")
    mode = service["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
    if mode not in {"Standard", "RawDeployment"}:  # Knative allows one port and no PORT
        problems.append(f"deploymentMode: {mode!r}; these containers need Standard")
    return problems


def _port_problems(runtime: dict[str, Any], settings: Settings) -> list[str]:
    """Ports, probes and the metrics annotation against PORT, GRPC_PORT, METRICS_PORT."""
    problems = []
    container = _container(runtime)
    ports = container.get("ports", [])
    if not ports or ports[0].get("containerPort") != settings.port:
        problems.append(f"ports[0]: the Service's port 80 must reach PORT {settings.port}")
    by_name = {p.get("name"): p.get("containerPort") for p in ports}
    if settings.grpc_port is not None and by_name.get("h2c") != settings.grpc_port:
        problems.append(f"ports: no h2c port for GRPC_PORT {settings.grpc_port}")
    for probe, path in PROBES:
        action = container.get(probe, {}).get("httpGet")
        if action is None:
            problems.append(f"{probe}: missing (want GET {path})")
        elif _port_number(action.get("port"), ports) != settings.port or action.get("path") != path:
            problems.append(f"{probe}: {action} is not GET {path} on PORT {settings.port}")
    metrics_port = settings.metrics_port or settings.port
    annotations = runtime["spec"].get("annotations", {})
    if annotations.get("prometheus.kserve.io/port") != str(metrics_port):
        problems.append(f"prometheus.kserve.io/port: metrics are on {metrics_port}")
    return problems


def _shutdown_problems(
    service: dict[str, Any], runtime: dict[str, Any], settings: Settings
) -> list[str]:
    """The drain outlasts the readiness probe, and the pod's grace outlasts the drain."""
    problems = []
    readiness_period = _container(runtime).get("readinessProbe", {}).get("periodSeconds", 10)
    if settings.shutdown_delay_seconds <= readiness_period:
        problems.append("SHUTDOWN_DELAY_SECONDS must outlast the readiness probe's period")
    stop = longest_stop_seconds(settings)  # docs/operations.md, "Stopping"
    grace = service["spec"]["predictor"].get(
        "terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS
    )
    if grace <= stop:
        problems.append(f"terminationGracePeriodSeconds {grace} <= the {stop:g} s a stop takes")
    return problems


def _repository_problems(service: dict[str, Any], settings: Settings) -> list[str]:
    """MODEL_REPOSITORY is where storageUri lands, or else the image's built-in export."""
    repository = str(settings.model_repository)
    if service["spec"]["predictor"]["model"].get("storageUri"):
        if repository != KSERVE_MODEL_DIR:
            return [f"MODEL_REPOSITORY {repository}: storageUri lands in {KSERVE_MODEL_DIR}"]
    elif repository.startswith(KSERVE_MODEL_DIR) or not re.search(
        rf"--repository {re.escape(repository)}(\s|$)", DOCKERFILE
    ):
        return [f"MODEL_REPOSITORY {repository}: no storageUri, and the image has none there"]
    return []


# --- the tests -------------------------------------------------------------------------------


def test_there_is_one_runtime_and_its_inference_services() -> None:
    assert set(RUNTIMES) == {"inference-gateway"}
    assert {d["metadata"]["name"] for _, d in SERVICES} == {
        "image-classifier",
        "efficientnet-lite0",
    }
    assert {(d["apiVersion"], d["kind"]) for _, d in MANIFESTS} == {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    }


@pytest.mark.parametrize(("where", "document"), MANIFESTS, ids=[w for w, _ in MANIFESTS])
def test_each_manifest_fits_the_generated_classes(
    where: str, document: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert check_document(document, schema) == []


def test_the_walker_names_a_misspelt_key_a_wrong_type_and_a_missing_field(
    schema: dict[str, Any],
) -> None:
    """A check that cannot fail proves nothing: break copies of the manifests on purpose."""
    service = copy.deepcopy(dict(SERVICES)["inferenceservice.yaml#0"])
    predictor = service["spec"]["predictor"]
    predictor["model"]["modelFormt"] = predictor["model"].pop("modelFormat")
    predictor["terminationGracePeriodSeconds"] = "45"
    predictor["model"]["env"] = [{"value": "/mnt/models"}]
    assert sorted(check_document(service, schema)) == [
        "spec.predictor.model.env[0].name: missing required field of V1EnvVar",
        "spec.predictor.model.modelFormat: missing required field of V1beta1ModelSpec",
        "spec.predictor.model.modelFormt: unknown field (V1beta1ModelSpec has no such key)",
        "spec.predictor.terminationGracePeriodSeconds: expected int, got str '45'",
    ]

    runtime = copy.deepcopy(RUNTIMES["inference-gateway"])
    container = runtime["spec"]["containers"][0]
    container["ports"][0]["containerPort"] = "8000"
    container["readinessProbe"]["httpGet"]["pth"] = "/ready"
    container["securityContext"]["readOnlyRootFilesystem"] = "yes"
    runtime["spec"]["supportedModelFormats"][0]["version"] = 1  # YAML's unquoted 1
    runtime["spec"]["protocolVersions"] = "v2"
    assert sorted(check_document(runtime, schema)) == [
        "spec.containers[0].ports[0].containerPort: expected int, got str '8000'",
        "spec.containers[0].readinessProbe.httpGet.pth: unknown field (V1HTTPGetAction has no such key)",
        "spec.containers[0].securityContext.readOnlyRootFilesystem: expected bool, got str 'yes'",
        "spec.protocolVersions: expected a list, got str 'v2'",
        "spec.supportedModelFormats[0].version: expected str, got int 1",
    ]
    assert check_document({"apiVersion": "v1", "kind": "Nonsense"}, schema) == [
        "(document): no generated class V1Nonsense to check it against"
    ]


def test_the_runtime_gives_the_gateway_what_it_needs() -> None:
    assert runtime_problems(RUNTIMES["inference-gateway"]) == []


@pytest.mark.parametrize(("where", "service"), SERVICES, ids=SERVICE_IDS)
def test_each_inference_service_matches_the_runtime_and_its_settings(
    where: str, service: dict[str, Any]
) -> None:
    assert service_problems(service, RUNTIMES) == []


def _mutated(
    document: dict[str, Any], path: tuple[str | int, ...], value: object
) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


C = ("spec", "containers", 0)
#: Where each variable sits in the runtime container's env list.
ENV = {e["name"]: i for i, e in enumerate(_container(RUNTIMES["inference-gateway"])["env"])}
#: (what breaks, where in the runtime, the new value, words of the problem it must cause)
RUNTIME_BREAKS = [
    (
        "root writable",
        (*C, "securityContext", "readOnlyRootFilesystem"),
        False,
        "readOnlyRootFilesystem",
    ),
    ("as root", (*C, "securityContext", "runAsUser"), 0, "runAsUser"),
    ("no /tmp", (*C, "volumeMounts"), [], "/tmp is not an emptyDir"),
    ("cpu burst", (*C, "resources", "limits", "cpu"), "4", "cpu request must equal"),
    ("old image", (*C, "image"), "inference-gateway:0.0.9", "is not tagged"),
    (
        "template",
        (*C, "env", ENV["OTEL_SERVICE_NAME"], "value"),
        "{{.Labels}}",
        "only the InferenceService's metadata",
    ),
]
SERVICE_BREAKS = [
    (
        "runtime name",
        ("spec", "predictor", "model", "runtime"),
        "triton",
        "names no ServingRuntime",
    ),
    (
        "format version",
        ("spec", "predictor", "model", "modelFormat", "version"),
        "2",
        "modelFormat",
    ),
    ("protocol", ("spec", "predictor", "model", "protocolVersion"), "v1", "protocolVersion"),
    (
        "grace",
        ("spec", "predictor", "terminationGracePeriodSeconds"),
        39,
        "terminationGracePeriodSeconds 39",
    ),
    (
        "knative",
        ("metadata", "annotations", "serving.kserve.io/deploymentMode"),
        "Knative",
        "deploymentMode",
    ),
    (
        "repository",
        ("spec", "predictor", "model", "env"),
        [{"name": "MODEL_REPOSITORY", "value": "/models"}],
        "MODEL_REPOSITORY /models",
    ),
    (
        "typo in env",
        ("spec", "predictor", "model", "env"),
        [{"name": "GRPC_PROT", "value": "9000"}],
        "GRPC_PROT is neither",
    ),
    (
        "bad setting",
        ("spec", "predictor", "model", "env"),
        [{"name": "WORKERS", "value": "many"}],
        "WORKERS: Input should be a valid integer",
    ),
]
RUNTIME_SIDE_BREAKS = [
    ("PORT", (*C, "env", ENV["PORT"], "value"), "8080", "PORT 8080"),
    ("probe port", (*C, "readinessProbe", "httpGet", "port"), 8080, "readinessProbe"),
    ("probe path", (*C, "livenessProbe", "httpGet", "path"), "/ready", "livenessProbe"),
    ("gRPC port", (*C, "ports", 1, "containerPort"), 9001, "no h2c port for GRPC_PORT 9000"),
    (
        "short delay",
        (*C, "env", ENV["SHUTDOWN_DELAY_SECONDS"], "value"),
        "5",
        "SHUTDOWN_DELAY_SECONDS",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "words"), [b[1:] for b in RUNTIME_BREAKS], ids=[b[0] for b in RUNTIME_BREAKS]
)
def test_the_runtime_checks_catch_a_broken_container(
    path: tuple[str | int, ...], value: object, words: str
) -> None:
    problems = runtime_problems(_mutated(RUNTIMES["inference-gateway"], path, value))
    assert any(words in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("path", "value", "words"), [b[1:] for b in SERVICE_BREAKS], ids=[b[0] for b in SERVICE_BREAKS]
)
def test_the_cross_references_catch_a_broken_inference_service(
    path: tuple[str | int, ...], value: object, words: str
) -> None:
    service = _mutated(dict(SERVICES)["inferenceservice-builtin.yaml#0"], path, value)
    problems = service_problems(service, RUNTIMES)
    assert any(words in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [b[1:] for b in RUNTIME_SIDE_BREAKS],
    ids=[b[0] for b in RUNTIME_SIDE_BREAKS],
)
def test_the_cross_references_catch_a_runtime_out_of_step_with_its_settings(
    path: tuple[str | int, ...], value: object, words: str
) -> None:
    runtimes = {"inference-gateway": _mutated(RUNTIMES["inference-gateway"], path, value)}
    problems = service_problems(dict(SERVICES)["inferenceservice.yaml#0"], runtimes)
    assert any(words in problem for problem in problems), problems


if __name__ == "__main__":  # the child process of the `schema` fixture
    print(json.dumps(generated_schema(sys.argv[1:])))
