"""The container image, built from deploy/Dockerfile and run as users run it.

Built with podman (scripts/build_image.sh: a Debian base made with debootstrap where no
registry can be reached), started as its non-root user with a read-only root file
system: it must become ready, answer a real prediction, write JSON logs on stdout and
exit 0 on SIGTERM; its serving environment has no torch, and its size stays within
the goal. Slow (the build stage installs torch to export the model), so it runs in
`make image-test`, not `make test`; skipped, saying why, where podman cannot run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers import wait_until
from tests.images import CAT_CLASSES, CAT_PNG
from tests.servers import free_port
from tests.tools import unavailable

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "inference-gateway:test"
PODMAN = shutil.which("podman") or "podman"
RUN_FLAGS = (
    "--runtime", "runc",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
    "--network", "host",
)  # fmt: skip
pytestmark = [pytest.mark.integration, pytest.mark.container]


def _podman_works() -> str | None:
    """Why podman cannot run containers here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (make image-test installs it)"
    probe = subprocess.run(
        [PODMAN, "info"], capture_output=True, text=True, timeout=60, check=False
    )
    return None if probe.returncode == 0 else f"podman cannot run here: {probe.stderr[-300:]}"


@pytest.fixture(scope="module")
def image() -> str:
    reason = _podman_works()
    if reason is not None:
        unavailable(reason)
    build = subprocess.run(
        [str(ROOT / "scripts" / "build_image.sh"), IMAGE],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, str]]:
    """The image running as its own user, read-only; yields (name, base URL)."""
    name = f"gateway-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    started = time.monotonic()
    subprocess.run(
        [
            PODMAN, "run", *RUN_FLAGS, "--detach", "--name", name, "--read-only",
            "--env", f"PORT={port}", "--env", "HOST=127.0.0.1", "--env", "WORKERS=1",
            image,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=180, what="the container to be ready")
        # What a scale-out waits for once the image is on the node (docs/kubernetes.md).
        print(f"\nfrom `podman run` to /ready 200: {time.monotonic() - started:.1f} s")
        yield name, url
    finally:
        subprocess.run([PODMAN, "rm", "--force", name], capture_output=True, check=False)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _inspect(name: str, template: str) -> str:
    return subprocess.run(
        [PODMAN, "inspect", "--format", template, name],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip


def test_the_image_serves_as_a_non_root_read_only_container_and_stops_cleanly(
    container: tuple[str, str],
) -> None:
    name, url = container
    assert _inspect(name, "{{.Config.User}}") == "gateway"
    assert _inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    answer = httpx.post(
        f"{url}/predict", content=CAT_PNG.read_bytes(), headers={"content-type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["class_id"] in CAT_CLASSES

    stopped = subprocess.run(
        [PODMAN, "stop", "--time", "40", name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert _inspect(name, "{{.State.ExitCode}}") == "0"
    logs = subprocess.run(
        [PODMAN, "logs", name], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    records = [json.loads(line) for line in logs if line.startswith("{")]
    assert records and len(records) == len([line for line in logs if line.strip()])
    messages = [r.get("message") for r in records]
    assert "Model ready" in messages and "Shutdown signal received; draining" in messages
    assert any(r.get("endpoint") == "/predict" and r.get("trace_id") for r in records)


#: The image's size goal: what every new node pulls before a pod can serve.
MAX_IMAGE_BYTES = 500 * 1000 * 1000


def test_the_image_serves_without_torch_and_within_its_size(image: str) -> None:
    """``import torch`` fails in the image (torch only exported the model, in the build
    stage), and the image is at most 500 MB."""
    probe = subprocess.run(
        [PODMAN, "run", *RUN_FLAGS, "--rm", "--entrypoint", "python", image, "-c", "import torch"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, probe.stderr
    size = int(
        subprocess.run(
            [PODMAN, "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()
    )  # fmt: skip
    print(f"\nimage size: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES, f"the image is {size / 1e6:.0f} MB"
