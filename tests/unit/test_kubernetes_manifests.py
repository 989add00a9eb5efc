"""The Kubernetes manifests in deploy/kubernetes/, checked offline (no cluster runs here).

Rendering: each kustomization (the root, the base, every overlay) is built by a small
renderer below that knows the few kustomize features these files use (``resources``,
``namespace``, ``images``, strategic-merge patches keyed the way Kubernetes keys its
lists, JSON 6902 patches, ``$patch: delete``) and refuses any other. Tests check that
``kubectl kustomize`` (or ``kustomize build``) renders exactly the same objects: ``make
tools`` provides kubectl, and without it they skip on a developer's machine and fail in CI.

Schemas: every manifest file and every rendered object is validated against Kubernetes'
own OpenAPI schemas in their strict form (unknown fields refused), as PyPI's
``kubernetes-validate`` ships them, for the oldest and the newest Kubernetes version
checked (`KUBERNETES_VERSIONS`); the custom kinds (ServiceMonitor, PrometheusRule,
ScaledObject) against their definitions' schemas vendored in tests/schemas/ (its README
says from where). A test breaks copies on purpose to show that the validator says no,
naming the path.

Cross-references: what the gateway needs from the pod (ports, probe paths against the
app's real routes, env names and values through its own `Settings`, the shutdown
timeline, writable directories, CPU and workers), what the objects say of each other
(selectors, named ports, the autoscalers' target and metric), and that the
PrometheusRule is what scripts/build_prometheus_rule.py makes of
deploy/prometheus/rules/.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource
from starlette.routing import Match

from inference_gateway.app import create_app
from inference_gateway.config import MAX_AUTO_WORKERS, Settings
from inference_gateway.observability.metrics import Metrics
from inference_gateway.shutdown import longest_stop_seconds
from tests.manifests import (
    DOCKERFILE,
    PROJECT_VERSION,
    clear_settings_env,
    settings_from,
)
from tests.tools import unavailable

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT / "tests" / "schemas"
RULES = ROOT / "deploy" / "prometheus" / "rules"
ADAPTER_VALUES = KUBE / "autoscaling" / "prometheus-adapter-values.yaml"
#: The oldest Kubernetes these manifests are for, and the newest the installed
#: kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31", kv_utils.major_minor(kubernetes_validate.latest_version()))
#: Every kustomization: the root that `kubectl apply -k deploy/kubernetes` builds, the
#: base, and each overlay.
BUILDS = sorted(str(path.parent.relative_to(KUBE)) for path in KUBE.rglob("kustomization.yaml"))
#: Vendored schemas of the custom kinds: (apiVersion, kind) -> file in tests/schemas/.
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
}
#: Kinds without a namespace (kustomize's namespace transformer gives them none).
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}
#: The start-up probe's budget for loading the models: at least this many seconds.
STARTUP_BUDGET_SECONDS = 300
#: The namespace whose Prometheus may scrape the metrics port.
MONITORING_NAMESPACE = "monitoring"


# --- a small kustomize ------------------------------------------------------------------------


class KustomizeError(ValueError):
    """A kustomization this renderer cannot build (or kustomize would refuse)."""


#: Strategic merge: the key that identifies the items of a list field, by field name.
#: A list field not named here is replaced whole, as Kubernetes does for atomic lists.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    with path.open(encoding="utf-8") as stream:
        return [d for d in yaml.safe_load_all(stream) if d is not None]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Build the kustomization in ``directory``, as ``kubectl kustomize`` would."""
    spec = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(spec) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: this renderer does not support {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        resources += kustomize(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        resources = apply_patch(resources, patch, directory)
    namespace = spec.get("namespace")
    if namespace is not None:
        for resource in resources:
            if resource["kind"] == "Namespace":  # kustomize renames it
                resource["metadata"]["name"] = namespace
            elif resource["kind"] not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = namespace
    for image in spec.get("images", []):
        set_image(resources, image)
    return resources


def set_image(resources: list[dict[str, Any]], image: dict[str, str]) -> None:
    """kustomize's ``images``: a new name, tag or digest for the containers that run
    the image named ``image["name"]`` (with any tag or digest)."""
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            current = container.get("image", "")
            name = re.split(r"@|:(?=[^/]*$)", current, maxsplit=1)[0]
            if name != image["name"]:
                continue
            suffix = current[len(name) :]
            if "digest" in image:
                suffix = "@" + image["digest"]
            elif "newTag" in image:
                suffix = ":" + image["newTag"]
            container["image"] = image.get("newName", name) + suffix


def _matches(resource: dict[str, Any], selector: dict[str, Any]) -> bool:
    """Whether a patch's target (kind, name, group, version) selects ``resource``."""
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {"kind": resource["kind"], "name": resource["metadata"]["name"]}
    actual |= {"group": group, "version": version}
    return all(actual.get(key) == value for key, value in selector.items())


def apply_patch(
    resources: list[dict[str, Any]], entry: dict[str, Any], directory: Path
) -> list[dict[str, Any]]:
    """One entry of ``patches``: a JSON 6902 list, or a strategic merge (or delete)."""
    text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
    patch = yaml.safe_load(text)
    if isinstance(patch, list):
        if "target" not in entry:
            raise KustomizeError("a JSON 6902 patch needs a target")
        targets = [r for r in resources if _matches(r, entry["target"])]
        for resource in targets:
            for operation in patch:
                json6902(resource, operation)
    else:
        target = entry.get("target") or {
            "kind": patch["kind"],
            "name": patch["metadata"]["name"],
        }
        targets = [r for r in resources if _matches(r, target)]
        if patch.get("$patch") == "delete":
            return [r for r in resources if not any(r is t for t in targets)]
        for resource in targets:
            merge(resource, patch)
    if not targets:
        raise KustomizeError(f"patch {entry} matches no resource")
    return resources


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic merge of ``patch`` into ``target``, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(target.get(key), list):
            target[key] = _merge_list(target[key], value, MERGE_KEYS[key])
        else:
            target[key] = copy.deepcopy(value)


def _merge_list(
    target: list[dict[str, Any]], patch: list[dict[str, Any]], key: str
) -> list[dict[str, Any]]:
    """Items with the same key merge; new ones come first, in the patch's order."""
    by_key = {item[key]: item for item in target}
    new = []
    for item in patch:
        if item[key] in by_key:
            merge(by_key[item[key]], item)
        else:
            new.append(copy.deepcopy(item))
    return new + target


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json6902(document: dict[str, Any], operation: dict[str, Any]) -> None:
    """One ``add``, ``replace`` or ``remove`` of RFC 6902, in place."""
    *parents, last = _pointer(operation["path"])
    parent: Any = document
    for step in parents:
        parent = parent[int(step)] if isinstance(parent, list) else parent[step]
    op = operation["op"]
    if op not in {"add", "replace", "remove"}:
        raise KustomizeError(f"this renderer does not support the JSON patch op {op!r}")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op != "add":
            del parent[index]
        if op != "remove":
            parent.insert(index, copy.deepcopy(operation["value"]))
    elif op == "remove":
        del parent[last]
    else:
        if op == "replace" and last not in parent:
            raise KustomizeError(f"replace: {operation['path']} does not exist")
        parent[last] = copy.deepcopy(operation["value"])


@functools.cache
def build(name: str) -> tuple[dict[str, Any], ...]:
    """The rendered objects of ``deploy/kubernetes/<name>`` (``.`` for the root)."""
    return tuple(kustomize(KUBE / name))


def by_kind(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> list[Any]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> Any:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def identity(document: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = document.get("metadata", {})
    return (
        document["apiVersion"],
        document["kind"],
        metadata.get("namespace", ""),
        metadata["name"],
    )


# --- schemas --------------------------------------------------------------------------------


@functools.cache
def _schema_directory(version: str) -> str:
    """kubernetes-validate's strict schemas for the newest patch release of ``version``."""
    shipped = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) == version]
    assert shipped, f"kubernetes-validate {kubernetes_validate.__version__} has no {version}"
    return f"kubernetes-json-schema/v{shipped[-1]}-local-strict"


@functools.cache
def _registry(version: str) -> Registry:
    """Kubernetes' definitions, where every schema's ``$ref`` points."""
    definitions = kv_utils.schema_contents(
        f"{_schema_directory(version)}/_definitions.json", version
    )
    return Resource.from_contents(definitions) @ Registry()  # type: ignore[no-any-return]


def _custom_schema(file: str) -> dict[str, Any]:
    """A vendored custom resource schema, adapted as tests/schemas/README.md says."""
    schema = json.loads((SCHEMAS / file).read_text(encoding="utf-8"))

    def adapt(node: Any) -> Any:
        if isinstance(node, list):
            return [adapt(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: adapt(value) for key, value in node.items()}
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if node.get("properties") and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node

    adapted: dict[str, Any] = adapt(schema)
    # Under kubernetes-validate's base URI, so that its definitions' references resolve.
    adapted["$id"] = f"https://kubernetes.io/api/custom/{file}"
    adapted["properties"]["metadata"] = {
        "$ref": "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return adapted


@functools.cache
def _schema(api_version: str, kind: str, version: str) -> dict[str, Any] | None:
    """The schema of a kind: a vendored one for custom kinds, else Kubernetes' own."""
    custom = CUSTOM_SCHEMAS.get((api_version, kind))
    if custom is not None:
        return _custom_schema(custom)
    # kubernetes-validate's file names: rbac.authorization.k8s.io/v1 -> rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema: dict[str, Any] = kv_utils.schema_contents(
            f"{_schema_directory(version)}/{kind.lower()}-{group_version}.json", version
        )
    except FileNotFoundError:
        return None
    return schema


def _path(error: jsonschema.ValidationError) -> str:
    path = ""
    for step in error.absolute_path:
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else str(step))
    return path or "(document)"


def schema_problems(document: dict[str, Any], version: str) -> list[str]:
    """Every way ``document`` breaks its kind's schema: ``path: message`` lines."""
    schema = _schema(str(document.get("apiVersion")), str(document.get("kind")), version)
    if schema is None:
        return [f"(document): no schema for {document.get('apiVersion')} {document.get('kind')}"]
    validator = jsonschema.Draft202012Validator(schema, registry=_registry(version))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    return [f"{_path(e)}: {e.message}" for e in errors]


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/kubernetes/ that is a whole Kubernetes object."""
    found = []
    for path in sorted(KUBE.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path == ADAPTER_VALUES:
            continue
        if path.name.endswith("-patch.yaml"):
            continue  # partial by design: checked within the build that applies it
        found.append(path)
    return found


MANIFEST_FILES = manifest_files()


# --- the gateway's side ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_settings_from_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from a manifest's env see that env only, not this process's."""
    clear_settings_env(monkeypatch, also={"TMPDIR"})


def container(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> Any:
    """The gateway's container in the Deployment."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "gateway")


def env_of(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objects).get("env", [])}


def settings_from_env(env: dict[str, str]) -> tuple[Settings | None, list[str]]:
    """``Settings`` from the Deployment's env (which may also set ``TMPDIR``)."""
    return settings_from(env, also_allowed={"TMPDIR"})


_ROUTES: dict[str, list[Any]] = {}


def routes_of(settings: Settings) -> list[Any]:
    """The app's routes for these settings (no model is loaded: no lifespan runs)."""
    key = settings.model_dump_json()
    if key not in _ROUTES:
        app = create_app(settings, model_loader=lambda: None, configure_logging=False)
        _ROUTES[key] = list(app.router.routes)
    return _ROUTES[key]


def serves(settings: Settings, path: str) -> bool:
    """Whether the app answers ``GET path`` with a route of its own."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in routes_of(settings))


@functools.cache
def metric_series_names() -> frozenset[str]:
    """Every series name the gateway's metrics can expose (``_total``, ``_bucket``...)."""
    metrics = Metrics(app_name="inference-gateway", app_version="0", environment="production")
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    return frozenset(
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    )


def promql_metrics(query: str) -> set[str]:
    """The metric names a PromQL query selects (``name{...}``)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", query))


def promql_label(query: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}="([^"]*)"', query))


def _port_numbers(ports: list[dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in ports if "name" in p}


def _resolve(port: object, ports: list[dict[str, Any]]) -> object:
    """A named port as its number, through the container's ports."""
    return _port_numbers(ports).get(port, port) if isinstance(port, str) else port


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- cross-references ------------------------------------------------------------------------


def pod_problems(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """What the gateway needs from its pod, whatever the settings."""
    problems = []
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    if main.get("image", "").rsplit(":", 1)[-1] != PROJECT_VERSION:
        problems.append(f"image: {main.get('image')!r} is not tagged {PROJECT_VERSION}")
    if main.get("args") != ["serve"]:
        problems.append("args: the image's entrypoint needs ['serve']")
    uid = int(re.search(r"--uid (\d+)", DOCKERFILE).group(1))  # type: ignore[union-attr]
    security = main.get("securityContext", {})
    wanted = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
    }
    for key, value in wanted.items():
        if security.get(key) != value:
            problems.append(f"securityContext.{key}: {security.get(key)!r}, want {value!r}")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("securityContext.capabilities.drop: want ['ALL']")
    seccomp = security.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile")
    if (seccomp or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile: want RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken: the pod must not mount a token")
    accounts = {a["metadata"]["name"]: a for a in by_kind(objects, "ServiceAccount")}
    account = accounts.get(pod.get("serviceAccountName", "default"))
    if account is None or account.get("automountServiceAccountToken") is not False:
        problems.append("serviceAccountName: not a ServiceAccount here without a token")
    keys = {c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])}
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    if "kubernetes.io/hostname" not in keys and not anti:
        problems.append("topologySpreadConstraints: pods are not spread across nodes")
    rolling = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
    if (rolling.get("maxUnavailable"), rolling.get("maxSurge")) != (0, 1):
        problems.append(f"strategy: {rolling}, want maxUnavailable 0 and maxSurge 1")
    return problems + _resource_problems(main) + _writable_problems(pod, main)


def _resource_problems(main: dict[str, Any]) -> list[str]:
    """CPU (and memory) requested as limited, in whole cores: WORKERS=0 counts the limit."""
    problems = []
    resources = main.get("resources", {})
    for resource in ("cpu", "memory"):
        requested = resources.get("requests", {}).get(resource)
        if requested is None or requested != resources.get("limits", {}).get(resource):
            problems.append(f"resources: the {resource} request must equal its limit")
    cpu = str(resources.get("limits", {}).get("cpu", "0"))
    if not _cores(cpu).is_integer() or _cores(cpu) < 1:
        problems.append(f"resources: a CPU limit of {cpu} is not a whole number of cores")
    return problems


def _writable_problems(pod: dict[str, Any], main: dict[str, Any]) -> list[str]:
    """/tmp, and every directory a setting points at, on an emptyDir."""
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
    writable = [path for path, name in mounts.items() if name in empty_dirs]
    problems = []
    if "/tmp" not in writable:
        problems.append("volumeMounts: /tmp is not an emptyDir (serve's temporary directories)")
    env = {e["name"]: e.get("value", "") for e in main.get("env", [])}
    for variable in ("TMPDIR", "PROMETHEUS_MULTIPROC_DIR", "WORKER_STATE_DIR"):
        value = env.get(variable)
        if value is not None and not any(Path(value).is_relative_to(w) for w in writable):
            problems.append(f"{variable} {value}: not on an emptyDir mount")
    return problems


def settings_problems(
    objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], settings: Settings
) -> list[str]:
    """Ports, probes, workers, the model repository and shutdown against the settings."""
    problems = []
    main = container(objects)
    ports = main.get("ports", [])
    named = _port_numbers(ports)
    if settings.host != "0.0.0.0":
        problems.append(f"HOST {settings.host}: the kubelet and the Service cannot reach it")
    expected = {"http": settings.port, "metrics": settings.metrics_port}
    if settings.grpc_port is not None:
        expected["grpc"] = settings.grpc_port
    for name, number in expected.items():
        if named.get(name) != number:
            problems.append(f"ports: {name} is {named.get(name)}, the setting says {number}")
    for name in set(named) - set(expected):
        problems.append(f"ports: {name} is no port of the gateway")
    cpu = _cores(str(main.get("resources", {}).get("limits", {}).get("cpu", "0")))
    if settings.workers == 0 and cpu > MAX_AUTO_WORKERS:
        problems.append(f"WORKERS=0 starts at most {MAX_AUTO_WORKERS} workers, not one per core")
    return (
        problems
        + _probe_problems(main, settings)
        + _shutdown_problems(objects, settings)
        + _repository_problems(objects, settings)
    )


def _probe_problems(main: dict[str, Any], settings: Settings) -> list[str]:
    """Start-up and readiness on /ready, liveness on /health, routes the app has."""
    problems = []
    wanted = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in wanted.items():
        action = main.get(probe, {}).get("httpGet")
        if action is None:
            problems.append(f"{probe}: missing (want GET {path})")
            continue
        if (
            action.get("path") != path
            or _resolve(action.get("port"), main["ports"]) != settings.port
        ):
            problems.append(f"{probe}: {action} is not GET {path} on PORT {settings.port}")
        if not serves(settings, action.get("path", "")):
            problems.append(f"{probe}: the gateway has no route {action.get('path')}")
    startup = main.get("startupProbe", {})
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < STARTUP_BUDGET_SECONDS:
        problems.append(
            f"startupProbe: {budget} s to load the models, want {STARTUP_BUDGET_SECONDS}"
        )
    return problems


def _shutdown_problems(
    objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], settings: Settings
) -> list[str]:
    """The delay outlasts the readiness probe, the grace period outlasts the stop."""
    problems = []
    readiness = container(objects).get("readinessProbe", {})
    noticed = readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3)
    if settings.shutdown_delay_seconds <= noticed:
        problems.append(
            f"SHUTDOWN_DELAY_SECONDS {settings.shutdown_delay_seconds:g} must outlast the "
            f"{noticed} s the readiness probe takes to notice"
        )
    if settings.graceful_shutdown_seconds < settings.request_timeout:
        problems.append("GRACEFUL_SHUTDOWN_SECONDS is shorter than REQUEST_TIMEOUT")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= longest_stop_seconds(settings):
        problems.append(
            f"terminationGracePeriodSeconds {grace} <= the {longest_stop_seconds(settings):g} s a stop takes"
        )
    return problems


def _repository_problems(
    objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], settings: Settings
) -> list[str]:
    """MODEL_REPOSITORY on a read-only volume the pod mounts; none for the built-in model."""
    if settings.model_repository is None:
        return []
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container(objects).get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if settings.model_repository == Path(mount["mountPath"]) and "emptyDir" not in volume:
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            claims = {c["metadata"]["name"] for c in by_kind(objects, "PersistentVolumeClaim")}
            if claim is not None and claim not in claims:
                return [f"MODEL_REPOSITORY: the claim {claim} is not in this build"]
            if not mount.get("readOnly"):
                return ["MODEL_REPOSITORY: mount the repository read-only"]
            return []
    return [f"MODEL_REPOSITORY {settings.model_repository}: no volume is mounted there"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def wiring_problems(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """What the objects say of each other: selectors, named ports, job labels."""
    problems = []
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    ports = container(objects)["ports"]
    service = one(objects, "Service")
    selectors = {
        "Deployment": deployment["spec"]["selector"],
        "Service": {"matchLabels": service["spec"]["selector"]},
        "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"],
        "NetworkPolicy": one(objects, "NetworkPolicy")["spec"]["podSelector"],
    }
    for index, constraint in enumerate(pod.get("topologySpreadConstraints", [])):
        selectors[f"topologySpreadConstraints[{index}]"] = constraint["labelSelector"]
    for owner, selector in selectors.items():
        if not _selects(selector, labels):
            problems.append(f"{owner}: its selector does not select the gateway's pods")
    for port in service["spec"]["ports"]:
        if not isinstance(_resolve(port["targetPort"], ports), int) or port[
            "targetPort"
        ] not in _port_numbers(ports):
            problems.append(f"Service port {port['name']}: targetPort names no container port")
    budget = one(objects, "PodDisruptionBudget")["spec"]
    if budget.get("maxUnavailable") != 1 and budget.get("minAvailable") != 1:
        problems.append("PodDisruptionBudget: want maxUnavailable 1 (or minAvailable 1)")
    return (
        problems
        + _network_problems(objects)
        + _monitoring_problems(objects)
        + _autoscaling_problems(objects)
    )


def _network_problems(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """The API port from this namespace, the metrics port from the monitoring one only."""
    problems = []
    ports = container(objects)["ports"]
    rules = one(objects, "NetworkPolicy")["spec"].get("ingress", [])
    opened: dict[str, list[Any]] = {}
    for rule in rules:
        for port in rule.get("ports", []):
            if port.get("port") not in _port_numbers(ports):
                problems.append(f"NetworkPolicy: port {port.get('port')!r} names no container port")
            opened.setdefault(port.get("port"), []).extend(rule.get("from", []))
    if {"podSelector": {}} not in opened.get("http", []):
        problems.append("NetworkPolicy: the http port is not open to this namespace")
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}
    }
    if opened.get("metrics") != [monitoring]:
        problems.append(
            f"NetworkPolicy: the metrics port must be open to {MONITORING_NAMESPACE} only"
        )
    return problems


def _monitoring_problems(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """The ServiceMonitor scrapes the Service's metrics port; the job label is its name."""
    problems = []
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")["spec"]
    if not _selects(monitor["selector"], service["metadata"].get("labels", {})):
        problems.append("ServiceMonitor: its selector does not select the Service")
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["endpoints"]:
        if endpoint.get("port") != "metrics" or endpoint.get("port") not in service_ports:
            problems.append(f"ServiceMonitor: {endpoint.get('port')!r} is not the metrics port")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append("ServiceMonitor: METRICS_PORT serves /metrics")
    if "jobLabel" in monitor:
        problems.append("ServiceMonitor: jobLabel would change the job the rules select")
    job = service["metadata"]["name"]
    rule = one(objects, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            for other in promql_label(item["expr"], "job") - {job}:
                problems.append(
                    f"{item.get('alert', item.get('record'))}: job={other!r}, not {job!r}"
                )
    return problems


def _autoscaling_problems(
    objects: tuple[dict[str, Any], ...] | list[dict[str, Any]],
) -> list[str]:
    """One autoscaler on the Deployment, on load and CPU, with the adapter's metric."""
    deployment = one(objects, "Deployment")
    autoscalers = by_kind(objects, "HorizontalPodAutoscaler") + by_kind(objects, "ScaledObject")
    if len(autoscalers) != 1:
        return [f"autoscaling: {len(autoscalers)} autoscalers on the Deployment, want one"]
    problems = []
    if "replicas" in deployment["spec"]:
        problems.append("Deployment: replicas would fight the autoscaler at every apply")
    target = autoscalers[0]["spec"]["scaleTargetRef"]
    if (target.get("kind", "Deployment"), target["name"]) != (
        "Deployment",
        deployment["metadata"]["name"],
    ):
        problems.append(f"scaleTargetRef: {target} is not the Deployment")
    if autoscalers[0]["kind"] == "ScaledObject":
        return problems + scaled_object_problems(autoscalers[0], objects)
    return problems + hpa_problems(autoscalers[0])


def adapter_rule() -> dict[str, Any]:
    """prometheus-adapter's rule for the gateway (the values file holds one)."""
    values = load_documents(ADAPTER_VALUES)[0]
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    assert len(rules) == 1
    return rules[0]


def hpa_problems(hpa: dict[str, Any]) -> list[str]:
    """A per-pod load metric that the adapter serves, and CPU as the second."""
    problems = []
    metrics = hpa["spec"].get("metrics", [])
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    cpu = [m["resource"] for m in metrics if m["type"] == "Resource"]
    if len(pods) != 1 or pods[0]["metric"]["name"] != adapter_rule()["name"]["as"]:
        problems.append("HPA: want one Pods metric, the one prometheus-adapter serves")
    elif pods[0]["target"] != {"type": "AverageValue", "averageValue": HPA_TARGET_IN_FLIGHT}:
        problems.append(f"HPA: the load target is {pods[0]['target']}, the plan says 8 in flight")
    if [c.get("name") for c in cpu] != ["cpu"] or cpu[0]["target"].get("type") != "Utilization":
        problems.append("HPA: want CPU utilization as the second metric")
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("HPA: minReplicas below 2 leaves one pod to lose")
    return problems


def scaled_object_problems(
    scaled: dict[str, Any], objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]
) -> list[str]:
    """The KEDA alternative: the same signals, targets and bounds as the HPA."""
    problems = []
    hpa = one(build("base"), "HorizontalPodAutoscaler")["spec"]
    spec = scaled["spec"]
    triggers = {t["type"]: t for t in spec["triggers"]}
    prometheus = triggers.get("prometheus", {})
    query = prometheus.get("metadata", {}).get("query", "")
    namespace = one(objects, "Deployment")["metadata"].get("namespace")
    if promql_metrics(query) != promql_metrics(adapter_rule()["seriesQuery"]):
        problems.append(f"ScaledObject: the query reads {promql_metrics(query)}, not the HPA's")
    if promql_label(query, "namespace") != {namespace}:
        problems.append(f"ScaledObject: the query's namespace is not {namespace}")
    if promql_label(query, "job") != {one(objects, "Service")["metadata"]["name"]}:
        problems.append("ScaledObject: the query's job is not the Service's name")
    if (prometheus.get("metricType"), prometheus.get("metadata", {}).get("threshold")) != (
        "AverageValue",
        HPA_TARGET_IN_FLIGHT,
    ):
        problems.append("ScaledObject: want AverageValue with the HPA's threshold")
    cpu_target = next(m for m in hpa["metrics"] if m["type"] == "Resource")["resource"]["target"]
    if triggers.get("cpu", {}).get("metadata", {}).get("value") != str(
        cpu_target["averageUtilization"]
    ):
        problems.append("ScaledObject: the CPU target differs from the HPA's")
    bounds = (spec.get("minReplicaCount"), spec.get("maxReplicaCount"))
    if bounds != (hpa["minReplicas"], hpa["maxReplicas"]):
        problems.append(f"ScaledObject: replicas {bounds}, the HPA's are different")
    return problems


#: The autoscaling target: requests in flight per pod (docs/kubernetes.md says why 8).
HPA_TARGET_IN_FLIGHT = "8"


def problems_of(name: str) -> list[str]:
    """Everything the cross-references find wrong with one build."""
    objects = build(name)
    settings, invalid = settings_from_env(env_of(objects))
    if settings is None:
        return invalid
    return pod_problems(objects) + settings_problems(objects, settings) + wiring_problems(objects)


# --- the tests: schemas ----------------------------------------------------------------------


def test_the_builds_are_the_root_the_base_and_three_overlays() -> None:
    assert BUILDS == [".", "base", "overlays/grpc", "overlays/keda", "overlays/model-repository"]
    assert [identity(o) for o in build(".")] == [identity(o) for o in build("base")]
    assert {o["kind"] for o in build(".")} == {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for name in BUILDS:
        objects = build(name)
        assert len({identity(o) for o in objects}) == len(objects), name
        namespaced = [o for o in objects if o["kind"] not in CLUSTER_SCOPED]
        assert {o["metadata"].get("namespace") for o in namespaced} == {"inference-gateway"}, name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "path", MANIFEST_FILES, ids=[str(p.relative_to(KUBE)) for p in MANIFEST_FILES]
)
def test_each_manifest_file_fits_its_schema(path: Path, version: str) -> None:
    problems = [
        f"{document['kind']} {document['metadata']['name']}: {problem}"
        for document in load_documents(path)
        for problem in schema_problems(document, version)
    ]
    assert problems == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", BUILDS)
def test_each_build_fits_the_schemas(name: str, version: str) -> None:
    problems = [
        f"{document['kind']} {document['metadata']['name']}: {problem}"
        for document in build(name)
        for problem in schema_problems(document, version)
    ]
    assert problems == []


def test_the_validator_rejects_a_typo_and_a_wrong_type_naming_the_path() -> None:
    """A check that cannot fail proves nothing: break copies on purpose."""
    version = KUBERNETES_VERSIONS[0]
    objects = copy.deepcopy(list(build("overlays/keda")))
    deployment = one(objects, "Deployment")
    main = deployment["spec"]["template"]["spec"]["containers"][0]
    main["ports"][0]["containerPort"] = "8000"
    main["readinessProbe"]["httpGet"]["pth"] = main["readinessProbe"]["httpGet"].pop("path")
    main["securityContext"]["readOnlyRootFilesystem"] = "yes"
    del main["name"]
    assert schema_problems(deployment, version) == [
        "spec.template.spec.containers[0]: 'name' is a required property",
        "spec.template.spec.containers[0].ports[0].containerPort: '8000' is not of type 'integer'",
        "spec.template.spec.containers[0].readinessProbe.httpGet: Additional properties are not allowed ('pth' was unexpected)",
        "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: 'yes' is not of type 'boolean', 'null'",
    ]
    monitor = one(objects, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    assert schema_problems(monitor, version) == [
        "spec.endpoints[0]: Additional properties are not allowed ('intervall' was unexpected)"
    ]
    rule = one(objects, "PrometheusRule")
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    rule["metadata"]["labelz"] = {}
    assert schema_problems(rule, version) == [
        "metadata: Additional properties are not allowed ('labelz' was unexpected)",
        "spec.groups[0].rules[0]: 'expr' is a required property",
    ]
    scaled = one(objects, "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "2"
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 8
    assert schema_problems(scaled, version) == [
        "spec.minReplicaCount: '2' is not of type 'integer', 'null'",
        "spec.triggers[0].metadata.threshold: 8 is not of type 'string'",
    ]
    assert schema_problems({"apiVersion": "v1", "kind": "Nonsense", "metadata": {}}, version) == [
        "(document): no schema for v1 Nonsense"
    ]


# --- the tests: rendering ---------------------------------------------------------------------


def _kustomize_binary() -> list[str]:
    """The command that builds a kustomization: the kubectl `make tools` put in the
    virtual environment (where the one on PATH is too old), kustomize, or kubectl."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return [str(beside_python), "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if not shutil.which("kubectl"):
        unavailable("neither kubectl nor kustomize is installed: `make tools` installs kubectl")
    return ["kubectl", "kustomize"]


@pytest.mark.parametrize("name", BUILDS)
def test_the_renderer_builds_what_kustomize_builds(name: str) -> None:
    theirs = _rendered_by_kustomize(KUBE / name)
    ours = {identity(d): d for d in build(name)}
    assert sorted(ours) == sorted(theirs)
    for key, document in ours.items():
        assert document == theirs[key], key


def _rendered_by_kustomize(directory: Path) -> dict[tuple[str, str, str, str], Any]:
    """What kubectl or kustomize builds from ``directory``."""
    command = _kustomize_binary()
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {identity(d): d for d in yaml.safe_load_all(result.stdout) if d}


def _an_overlay_of_your_own(tmp_path: Path) -> Path:
    """A copy of deploy/kubernetes with an overlay ``staging`` as a user would write it."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBE, tree)
    mine = tree / "overlays" / "staging"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(
        "namespace: staging\n"
        "resources:\n  - ../../base\n"
        "images:\n"
        "  - name: inference-gateway\n"
        "    newName: registry.example.com/team/inference-gateway\n"
        "    newTag: 0.1.0-rc1\n",
        encoding="utf-8",
    )
    return mine


def test_an_overlay_of_your_own_sets_the_namespace_and_the_image(tmp_path: Path) -> None:
    objects = kustomize(_an_overlay_of_your_own(tmp_path))
    assert one(objects, "Namespace")["metadata"]["name"] == "staging"
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"staging"}
    assert container(objects)["image"] == "registry.example.com/team/inference-gateway:0.1.0-rc1"


def test_kustomize_builds_an_overlay_of_your_own_as_the_renderer_does(tmp_path: Path) -> None:
    mine = _an_overlay_of_your_own(tmp_path)
    assert _rendered_by_kustomize(mine) == {identity(o): o for o in kustomize(mine)}


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [../x]\nnamePrefix: staging-\n", encoding="utf-8"
    )
    with pytest.raises(KustomizeError, match="namePrefix"):
        kustomize(tmp_path)
    document = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {}}
    with pytest.raises(KustomizeError, match="matches no resource"):
        apply_patch(
            [document],
            {"patch": "- {op: add, path: /spec/x, value: 1}", "target": {"name": "b"}},
            tmp_path,
        )
    with pytest.raises(KustomizeError, match="'move'"):
        json6902(document, {"op": "move", "from": "/spec", "path": "/x"})


# --- the tests: the gateway's side -------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_each_build_gives_the_gateway_what_it_needs(name: str) -> None:
    assert problems_of(name) == []


def test_the_settings_are_the_ones_the_docs_explain() -> None:
    settings, problems = settings_from_env(env_of(build("base")))
    assert problems == []
    assert settings is not None
    assert (settings.port, settings.metrics_port, settings.workers) == (8000, 9090, 0)
    assert (settings.shutdown_delay_seconds, settings.graceful_shutdown_seconds) == (15, 20)
    assert settings.model_repository is None  # the built-in model needs no volume
    pod = one(build("base"), "Deployment")["spec"]["template"]["spec"]
    assert longest_stop_seconds(settings) < pod["terminationGracePeriodSeconds"]
    grpc, _ = settings_from_env(env_of(build("overlays/grpc")))
    assert grpc is not None and grpc.grpc_port == 9000
    assert longest_stop_seconds(grpc) == longest_stop_seconds(settings) == 44
    models, _ = settings_from_env(env_of(build("overlays/model-repository")))
    assert models is not None and models.model_repository == Path("/models")


def test_the_probe_routes_exist_and_a_missing_one_is_caught() -> None:
    settings, _ = settings_from_env(env_of(build("base")))
    assert settings is not None
    assert serves(settings, "/ready") and serves(settings, "/health")
    assert not serves(settings, "/healthz")
    assert not serves(settings, "/metrics")  # on METRICS_PORT, not on the API port


def _mutated(
    objects: tuple[dict[str, Any], ...], kind: str, path: tuple[str | int, ...], value: object
) -> list[dict[str, Any]]:
    changed = copy.deepcopy(list(objects))
    target: Any = one(changed, kind)
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


POD = ("spec", "template", "spec")
C = (*POD, "containers", 0)
ENV = {e["name"]: i for i, e in enumerate(container(build("base"))["env"])}
#: (what breaks, kind, where, the new value, words of the problem it must cause)
BREAKS: list[tuple[str, str, tuple[str | int, ...], object, str]] = [
    (
        "root writable",
        "Deployment",
        (*C, "securityContext", "readOnlyRootFilesystem"),
        False,
        "readOnlyRootFilesystem",
    ),
    ("as root", "Deployment", (*C, "securityContext", "runAsUser"), 0, "runAsUser"),
    (
        "capabilities",
        "Deployment",
        (*C, "securityContext", "capabilities", "drop"),
        ["NET_RAW"],
        "capabilities.drop",
    ),
    (
        "escalation",
        "Deployment",
        (*C, "securityContext", "allowPrivilegeEscalation"),
        True,
        "allowPrivilegeEscalation",
    ),
    (
        "no seccomp",
        "Deployment",
        (*C, "securityContext", "seccompProfile"),
        {"type": "Unconfined"},
        "seccompProfile",
    ),
    (
        "token",
        "Deployment",
        (*POD, "automountServiceAccountToken"),
        True,
        "automountServiceAccountToken",
    ),
    (
        "account token",
        "ServiceAccount",
        ("automountServiceAccountToken",),
        True,
        "serviceAccountName",
    ),
    ("no /tmp", "Deployment", (*C, "volumeMounts"), [], "/tmp is not an emptyDir"),
    (
        "tmpdir",
        "Deployment",
        (*C, "env", ENV["HOST"]),
        {"name": "TMPDIR", "value": "/var/tmp"},
        "TMPDIR /var/tmp",
    ),
    ("cpu burst", "Deployment", (*C, "resources", "limits", "cpu"), "4", "cpu request must equal"),
    (
        "half core",
        "Deployment",
        (*C, "resources"),
        {
            "requests": {"cpu": "1500m", "memory": "1Gi"},
            "limits": {"cpu": "1500m", "memory": "1Gi"},
        },
        "whole number of cores",
    ),
    ("old image", "Deployment", (*C, "image"), "inference-gateway:0.0.9", "is not tagged"),
    ("same node", "Deployment", (*POD, "topologySpreadConstraints"), [], "spread across nodes"),
    (
        "rollout",
        "Deployment",
        ("spec", "strategy", "rollingUpdate", "maxUnavailable"),
        1,
        "maxUnavailable 0",
    ),
    ("replicas", "Deployment", ("spec", "replicas"), 3, "replicas would fight"),
    ("localhost", "Deployment", (*C, "env", ENV["HOST"], "value"), "127.0.0.1", "HOST 127.0.0.1"),
    (
        "port",
        "Deployment",
        (*C, "env", ENV["PORT"], "value"),
        "8080",
        "http is 8000, the setting says 8080",
    ),
    (
        "metrics port",
        "Deployment",
        (*C, "env", ENV["METRICS_PORT"]),
        {"name": "ENABLE_DOCS", "value": "false"},
        "metrics is 9090, the setting says None",
    ),
    (
        "typo in env",
        "Deployment",
        (*C, "env", ENV["WORKERS"], "name"),
        "WORKRES",
        "WORKRES is neither",
    ),
    (
        "bad setting",
        "Deployment",
        (*C, "env", ENV["WORKERS"], "value"),
        "many",
        "WORKERS: Input should be a valid integer",
    ),
    (
        "probe path",
        "Deployment",
        (*C, "livenessProbe", "httpGet", "path"),
        "/ready",
        "livenessProbe",
    ),
    (
        "no route",
        "Deployment",
        (*C, "readinessProbe", "httpGet", "path"),
        "/healthz",
        "no route /healthz",
    ),
    (
        "probe port",
        "Deployment",
        (*C, "readinessProbe", "httpGet", "port"),
        "metrics",
        "readinessProbe",
    ),
    (
        "quick start",
        "Deployment",
        (*C, "startupProbe", "failureThreshold"),
        6,
        "startupProbe: 30 s",
    ),
    (
        "short delay",
        "Deployment",
        (*C, "env", ENV["SHUTDOWN_DELAY_SECONDS"], "value"),
        "10",
        "SHUTDOWN_DELAY_SECONDS 10 must outlast",
    ),
    (
        "short grace",
        "Deployment",
        (*POD, "terminationGracePeriodSeconds"),
        40,
        "terminationGracePeriodSeconds 40",
    ),
    (
        "short drain",
        "Deployment",
        (*C, "env", ENV["GRACEFUL_SHUTDOWN_SECONDS"], "value"),
        "5",
        "shorter than REQUEST_TIMEOUT",
    ),
    (
        "service selector",
        "Service",
        ("spec", "selector"),
        {"app": "gateway"},
        "Service: its selector",
    ),
    ("target port", "Service", ("spec", "ports", 0, "targetPort"), "web", "targetPort names no"),
    ("budget", "PodDisruptionBudget", ("spec", "maxUnavailable"), 2, "maxUnavailable 1"),
    (
        "open metrics",
        "NetworkPolicy",
        ("spec", "ingress", 1, "from"),
        [{"podSelector": {}}],
        "metrics port must be open",
    ),
    (
        "closed api",
        "NetworkPolicy",
        ("spec", "ingress", 0, "from"),
        [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
        "http port is not open",
    ),
    (
        "monitor port",
        "ServiceMonitor",
        ("spec", "endpoints", 0, "port"),
        "http",
        "'http' is not the metrics port",
    ),
    ("job label", "ServiceMonitor", ("spec", "jobLabel"), "app.kubernetes.io/name", "jobLabel"),
    (
        "hpa metric",
        "HorizontalPodAutoscaler",
        ("spec", "metrics", 0, "pods", "metric", "name"),
        "active_requests",
        "the one prometheus-adapter serves",
    ),
    (
        "hpa target",
        "HorizontalPodAutoscaler",
        ("spec", "metrics", 0, "pods", "target", "averageValue"),
        "32",
        "8 in flight",
    ),
    (
        "cpu only",
        "HorizontalPodAutoscaler",
        ("spec", "metrics"),
        [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ],
        "one Pods metric",
    ),
    ("one pod", "HorizontalPodAutoscaler", ("spec", "minReplicas"), 1, "minReplicas"),
    (
        "hpa target ref",
        "HorizontalPodAutoscaler",
        ("spec", "scaleTargetRef", "name"),
        "gateway",
        "is not the Deployment",
    ),
]


@pytest.mark.parametrize(
    ("kind", "path", "value", "words"), [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS]
)
def test_the_cross_references_catch_a_broken_build(
    kind: str, path: tuple[str | int, ...], value: object, words: str
) -> None:
    objects = _mutated(build("base"), kind, path, value)
    settings, invalid = settings_from_env(env_of(objects))
    problems = invalid
    if settings is not None:
        problems = (
            pod_problems(objects) + settings_problems(objects, settings) + wiring_problems(objects)
        )
    assert any(words in problem for problem in problems), problems


SCALED = ("spec", "triggers", 0, "metadata")
#: (what breaks, overlay, kind, where, the new value, words of the problem it must cause)
OVERLAY_BREAKS: list[tuple[str, str, str, tuple[str | int, ...], object, str]] = [
    (
        "query metric",
        "keda",
        "ScaledObject",
        (*SCALED, "query"),
        'sum(http_requests_total{job="inference-gateway",namespace="inference-gateway"})',
        "not the HPA's",
    ),
    (
        "query namespace",
        "keda",
        "ScaledObject",
        (*SCALED, "query"),
        'sum(active_requests{job="inference-gateway",namespace="default"})',
        "namespace is not",
    ),
    ("threshold", "keda", "ScaledObject", (*SCALED, "threshold"), "16", "the HPA's threshold"),
    ("bounds", "keda", "ScaledObject", ("spec", "maxReplicaCount"), 50, "replicas (2, 50)"),
    (
        "cpu",
        "keda",
        "ScaledObject",
        ("spec", "triggers", 1, "metadata", "value"),
        "50",
        "CPU target differs",
    ),
    (
        "grace with gRPC",
        "grpc",
        "Deployment",
        (*POD, "terminationGracePeriodSeconds"),
        44,
        "terminationGracePeriodSeconds 44",
    ),
    (
        "gRPC port",
        "grpc",
        "Deployment",
        (*C, "ports", 2, "containerPort"),
        9001,
        "grpc is 9001, the setting says 9000",
    ),
    (
        "repository mount",
        "model-repository",
        "Deployment",
        (*C, "volumeMounts"),
        [{"name": "tmp", "mountPath": "/tmp"}],
        "no volume is mounted there",
    ),
    (
        "writable models",
        "model-repository",
        "Deployment",
        (*C, "volumeMounts", 0, "readOnly"),
        False,
        "read-only",
    ),
    (
        "no claim",
        "model-repository",
        "PersistentVolumeClaim",
        ("metadata", "name"),
        "models",
        "claim model-repository is not",
    ),
]


@pytest.mark.parametrize(
    ("overlay", "kind", "path", "value", "words"),
    [b[1:] for b in OVERLAY_BREAKS],
    ids=[b[0] for b in OVERLAY_BREAKS],
)
def test_the_checks_catch_a_broken_overlay(
    overlay: str, kind: str, path: tuple[str | int, ...], value: object, words: str
) -> None:
    objects = _mutated(build(f"overlays/{overlay}"), kind, path, value)
    settings, invalid = settings_from_env(env_of(objects))
    assert settings is not None, invalid
    problems = (
        pod_problems(objects) + settings_problems(objects, settings) + wiring_problems(objects)
    )
    assert any(words in problem for problem in problems), problems


def test_two_autoscalers_are_refused() -> None:
    objects = [*build("base"), *by_kind(build("overlays/keda"), "ScaledObject")]
    assert "2 autoscalers" in " ".join(_autoscaling_problems(objects))


# --- the tests: autoscaling and monitoring sources -------------------------------------------


def test_the_adapter_rule_serves_a_real_gauge_per_pod() -> None:
    rule = adapter_rule()
    assert promql_metrics(rule["seriesQuery"]) == {"active_requests"}
    assert promql_metrics(rule["seriesQuery"]) <= metric_series_names()
    assert promql_label(rule["seriesQuery"], "job") == {
        one(build("base"), "Service")["metadata"]["name"]
    }
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert re.fullmatch(rule["name"]["matches"], "active_requests")
    assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"]
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_every_metric_the_autoscalers_and_rules_query_exists() -> None:
    queries = [adapter_rule()["seriesQuery"]]
    queries += [
        t["metadata"]["query"]
        for t in one(build("overlays/keda"), "ScaledObject")["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    for group in one(build("base"), "PrometheusRule")["spec"]["groups"]:
        queries += [rule["expr"] for rule in group["rules"]]
    names = set().union(*(promql_metrics(q) for q in queries))
    recorded = {
        rule["record"]
        for group in one(build("base"), "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    assert "active_requests" in names
    assert names - metric_series_names() - recorded - {"up"} == set()


def _rule_builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_prometheus_rule", ROOT / "scripts" / "build_prometheus_rule.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_prometheus_rule_is_generated_from_the_rule_files() -> None:
    builder = _rule_builder()
    committed = (KUBE / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == builder.render(), "run scripts/build_prometheus_rule.py"
    groups = [
        group
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    ]
    assert yaml.safe_load(committed)["spec"]["groups"] == groups
    assert {g["name"] for g in groups} >= {"inference-gateway-sli", "inference-gateway-slo"}


def test_the_drift_check_fails_when_a_rule_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = _rule_builder()
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    alerts = rules / "slo-alerts.yml"
    alerts.write_text(alerts.read_text().replace("for: 2m", "for: 3m"), encoding="utf-8")
    monkeypatch.setattr(builder, "RULES", rules)
    assert builder.render() != (KUBE / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    monkeypatch.setattr(builder, "TARGET", KUBE / "base" / "prometheusrule.yaml")
    assert builder.main(["--check"]) == 1


def test_the_docs_describe_these_manifests() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    for words in (
        "kubectl apply -k deploy/kubernetes",
        "metrics-server",
        "prometheus-adapter",
        "Prometheus Operator",
        "KEDA",
        "SHUTDOWN_DELAY_SECONDS",
        "maxUnavailable: 0",
        "bench/results/README.md",
        "terminationGracePeriodSeconds",
    ):
        assert words in doc, words
    for name in BUILDS:
        if name.startswith("overlays/"):
            assert f"deploy/kubernetes/{name}" in doc, name
