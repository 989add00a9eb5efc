"""The Open Inference Protocol with KServe's own Python client, unchanged.

`kserve.InferenceRESTClient` (protocol v2) against a real ``inference-gateway serve``:
health, model readiness, and inference with a preprocessed FP32 tensor and with
encoded images, the way a KServe user's code calls a v2 server. The client runs in a
process of its own (tests/kserve_probe.py says why).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from inference_gateway.config import Settings
from inference_gateway.inference.onnx_export import export_to_repository
from tests.images import CAT_CLASSES, CAT_PNG, ESPRESSO
from tests.servers import REPO_ROOT, gateway_process, wait_until
from tests.tools import unavailable

KSERVE = REPO_ROOT / "deploy" / "kserve"

pytestmark = pytest.mark.integration


def test_kserves_rest_client_works_unchanged() -> None:
    with gateway_process({"WORKERS": "1"}) as gateway:
        probe = subprocess.run(
            [sys.executable, "-m", "tests.kserve_probe", gateway.url],
            capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=120,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-2000:]
        seen = json.loads(probe.stdout)
        expected = httpx.post(
            f"{gateway.url}/predict", content=CAT_PNG.read_bytes(),
            headers={"content-type": "image/png"},
        ).json()["predictions"][0]["class_id"]  # fmt: skip
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["tensor"] == {"id": "k-tensor", "shape": [1, 1000], "top1": [expected]}
    assert seen["images"]["id"] == "k-images" and seen["images"]["shape"] == [2, 1000]
    cat, coffee = seen["images"]["top1"]
    assert cat in CAT_CLASSES and cat == expected and coffee == ESPRESSO


def _image_env() -> dict[str, str]:
    """The ``ENV`` of deploy/Dockerfile's runtime stage (``PATH`` left to the caller)."""
    runtime = (KSERVE.parent / "Dockerfile").read_text().split(" AS runtime", 1)[1]
    env: dict[str, str] = {}
    continued = False
    for line in (raw.strip() for raw in runtime.splitlines()):
        if line.startswith("ENV ") or continued:
            env.update(re.findall(r"(\w+)=(\S+)", line.removeprefix("ENV ")))
            continued = line.endswith("\\")
    env.pop("PATH", None)
    return env


def _runtime_container() -> dict[str, Any]:
    (container,) = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())["spec"][
        "containers"
    ]
    return dict(container)


def test_the_serving_runtime_serves_both_ports_in_the_environment_its_manifest_gives(
    tmp_path: Path,
) -> None:
    """The ServingRuntime's container as a kubelet would start it, without a cluster:
    the image's environment and the manifest's (ports 8000 and 9000, ``MODEL_REPOSITORY``
    /mnt/models with a repository in it, as KServe's storage initializer leaves it), its
    uid and gid with no supplementary groups, a read-only root filesystem with an
    emptyDir on /tmp, and a network of its own. KServe's own REST and gRPC clients then
    call both ports from inside that network."""
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if unshare is None or nsenter is None or shutil.which("ip") is None or os.geteuid() != 0:
        unavailable("needs root, util-linux's unshare and nsenter, and iproute2 (make tools)")
    container = _runtime_container()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {
        **_image_env(),
        **{e["name"]: e["value"] for e in container["env"]},
        "OTEL_SERVICE_NAME": "image-classifier",  # what KServe puts for {{.Name}}
        "HOME": "/nonexistent",  # the image user's
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    }
    assert env["MODEL_REPOSITORY"] == "/mnt/models"
    assert (env["PORT"], env["GRPC_PORT"]) == (str(ports["http1"]), str(ports["h2c"]))
    (tmp_mount,) = [m["mountPath"] for m in container["volumeMounts"]]
    repository = tmp_path / "storage"
    export_to_repository(repository, Settings(_env_file=None).model_cache_dir)
    for path in [tmp_path, *repository.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else path.stat().st_mode | 0o644)
    python = Path(sys.base_prefix)
    # The image's Python is readable by every user; this one may sit in a home only
    # root can enter (/root): hide that home, keeping the interpreter's directory in it.
    closed = [d for d in reversed(python.parents) if not d.stat().st_mode & 0o001]
    unhide = (
        [
            "mkdir /mnt/python",
            f"mount --bind {python} /mnt/python",
            f"mount -t tmpfs -o mode=0755 tmpfs {closed[0]}",
            f"mkdir -p {python}",
            f"mount --move /mnt/python {python}",
        ]
        if closed
        else []
    )
    # The checkout and its virtual environment (the image's /opt/venv and /app) may sit
    # under the emptyDir's path (a clone in /tmp): kept aside, then put back over it.
    kept = sorted(
        {p for p in (REPO_ROOT.resolve(), Path(sys.prefix).resolve())
         if p.is_relative_to(tmp_mount)}
    )  # fmt: skip
    keep_aside = [
        f"mkdir /mnt/keep{n} && mount --bind {p} /mnt/keep{n}" for n, p in enumerate(kept)
    ]
    put_back = [f"mkdir -p {p} && mount --bind /mnt/keep{n} {p}" for n, p in enumerate(kept)]
    user = ["setpriv", f"--reuid={security['runAsUser']}", f"--regid={security['runAsGroup']}"]
    start = " && ".join(
        [
            "ip link set lo up",
            # What the storage initializer downloaded, then the read-only root, then the
            # emptyDir (last: it hides the host's /tmp, where the test's files are).
            "mount -t tmpfs tmpfs /mnt",
            "mkdir /mnt/models",
            f"mount --bind -o ro {repository} /mnt/models",
            *keep_aside,
            *unhide,
            "mount --bind / /",
            "mount -o remount,bind,ro /",
            f"mount -t tmpfs -o mode=1777,size=256m tmpfs {tmp_mount}",
            *put_back,
            f"cd {tmp_mount}",
            "exec " + " ".join([*user, "--clear-groups", "--no-new-privs", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()),
                sys.executable, "-m", "inference_gateway.cli", *container["args"]]),
        ]
    )  # fmt: skip
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [unshare, "--mount", "--net", "--propagation", "private", "sh", "-c", start],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # nsenter must find the server's own network, not ours before unshare made it.
        own = os.readlink("/proc/self/ns/net")
        wait_until(
            lambda: os.readlink(f"/proc/{server.pid}/ns/net") != own,
            what="the server's network namespace",
        )
        probe = subprocess.run(
            [nsenter, f"--net=/proc/{server.pid}/ns/net", sys.executable, "-m",
             "tests.kserve_probe", f"http://127.0.0.1:{ports['http1']}",
             f"127.0.0.1:{ports['h2c']}"],
            capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=300,
        )  # fmt: skip
        status = Path(f"/proc/{server.pid}/status").read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=90)  # SHUTDOWN_DELAY_SECONDS is 10 here
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
            exit_code = None
    log = log_path.read_text(errors="replace")
    assert probe.returncode == 0, probe.stderr[-2000:] + log[-3000:]
    uid = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid) == {str(security["runAsUser"])}
    seen = json.loads(probe.stdout)
    rest, grpc = seen["rest"], seen["grpc"]
    assert (rest["live"], rest["ready"], rest["model_ready"]) == (True, True, True)
    assert (grpc["live"], grpc["ready"], grpc["model_ready"]) == (True, True, True)
    assert rest["tensor"]["top1"] == grpc["tensor"]["top1"] and grpc["tensor"]["id"] == "g-tensor"
    assert rest["tensor"]["top1"][0] in CAT_CLASSES
    cat, coffee = rest["images"]["top1"]
    assert cat in CAT_CLASSES and coffee == ESPRESSO
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert all(r["level"] not in ("ERROR", "CRITICAL") for r in records), log[-3000:]
    assert exit_code == 0, log[-3000:]
