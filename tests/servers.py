"""Real gateway processes for integration tests, on loopback.

Each server is started with ``PORT=0``: the system picks its port when it binds, and the
test reads back which one it was from the process's listening socket, so no port is
picked, released and raced for. A server that does not stop when asked at the end of
its test fails that test (after being killed), rather than hiding a hang.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Only for what must be known before a process starts (a port that several workers
    share with ``SO_REUSEPORT``, a balancer's configuration): for the gateway's HTTP
    port, `gateway_process` lets the server bind port 0 instead.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    """A running ``inference-gateway serve`` and where its output goes."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    exit_code: int | None = field(default=None)
    final_log: list[str] | None = field(default=None)

    def log_lines(self) -> list[str]:
        """Everything the process wrote to stdout and stderr (kept after it stopped), in
        whole lines: while it runs, a line it is still writing is left for the next read."""
        if self.final_log is not None:
            return self.final_log
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        if lines and not text.endswith("\n") and self.process.poll() is None:
            lines.pop()  # half-written: a reader parsing it as JSON would fail
        return lines

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.exit_code = self.process.wait(timeout=timeout)
        return self.exit_code


#: How long a server may take to stop at the end of its test before it fails the test
#: (the default grace period is 30 s; a server that keeps it is gone long before).
STOP_TIMEOUT = 60.0
#: ``/proc/net/tcp`` states: a listening socket, an established connection.
_LISTEN = "0A"
_ESTABLISHED = "01"


def _sockets(pid: int, state: str) -> list[tuple[int, int]]:
    """(local port, remote port) of the TCP sockets in ``state`` that the process
    ``pid`` holds open (from ``/proc``): a connection still in a listener's accept queue
    belongs to no process yet."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and fields[9] in inodes:
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                found.append((local, remote))
    return found


def listening_ports(pid: int) -> set[int]:
    """The TCP ports the process ``pid`` listens on."""
    return {local for local, _ in _sockets(pid, _LISTEN)}


def has_accepted(pid: int, client: socket.socket) -> bool:
    """Whether the server process ``pid`` has accepted the connection ``client`` made."""
    port = client.getsockname()[1]
    return any(remote == port for _, remote in _sockets(pid, _ESTABLISHED))


def _bound_port(process: subprocess.Popen[bytes], known: set[int]) -> int | None:
    """The port a server started with ``PORT=0`` bound: its one listening port that the
    test did not choose (``GRPC_PORT``, ``METRICS_PORT``). None until it listens."""
    try:
        ports = listening_ports(process.pid) - known
    except FileNotFoundError:  # exited
        return None
    if len(ports) > 1:
        raise RuntimeError(f"the server listens on several unknown ports: {sorted(ports)}")
    return next(iter(ports), None)


def _is_ready(url: str, path: str = "/ready") -> bool:
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def gateway_process(
    env: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    ready_timeout: float = 120,
    wait_for: str = "/ready",
    port: int | None = None,
    stop_timeout: float = STOP_TIMEOUT,
    python: str = sys.executable,
) -> Iterator[GatewayProcess]:
    """Start the CLI server with JSON logs in a temporary directory; stop it after.

    Yields once ``wait_for`` answers 200 (``/health`` to get a server still loading).
    ``port``: where it listens (default: one the system picks, read back once bound).
    At the end, a server still running ``stop_timeout`` seconds after SIGTERM is killed
    and the test fails: a hang at stop is a defect, not noise. ``python``: the
    interpreter whose installed gateway runs (default: this one).
    """
    with tempfile.TemporaryDirectory(prefix="gateway-") as workdir:
        log_path = Path(workdir) / "gateway.log"
        full_env = {
            **os.environ,
            "PORT": str(port or 0),
            "HOST": "127.0.0.1",
            "ENVIRONMENT": "production",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "TRACE_SAMPLE_RATIO": "1",  # every trace exported, unless the test says
            # So `--app tests.gated_app:app` imports from the checkout.
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            **(env or {}),
        }
        for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "PROMETHEUS_MULTIPROC_DIR"):
            if env is None or key not in env:
                full_env.pop(key, None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [python, "-m", "inference_gateway.cli", "serve", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=workdir,
            )
        known = {int(full_env[k]) for k in ("GRPC_PORT", "METRICS_PORT") if full_env.get(k)}
        gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path)
        try:
            deadline = time.monotonic() + ready_timeout

            def not_starting() -> str | None:
                if process.poll() is not None:
                    return f"exited with {process.returncode}"
                return "did not become ready in time" if time.monotonic() > deadline else None

            while port is None:
                port = _bound_port(process, known)
                if port is None and (why := not_starting()):
                    raise RuntimeError(f"gateway {why}:\n" + "\n".join(gateway.log_lines()[-40:]))
                time.sleep(0.05)  # polling the kernel's table: nothing signals a bind
            gateway.url = f"http://127.0.0.1:{port}"
            while not _is_ready(gateway.url, wait_for):
                if why := not_starting():
                    raise RuntimeError(f"gateway {why}:\n" + "\n".join(gateway.log_lines()[-40:]))
                time.sleep(0.1)
            yield gateway
        finally:
            hung = False
            if process.poll() is None:
                try:
                    gateway.stop(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    hung = True
                    process.kill()
                    process.wait(timeout=30)
            gateway.final_log = gateway.log_lines()
            if hung:
                pytest.fail(
                    f"the server was still running {stop_timeout:g} s after SIGTERM at the end "
                    "of the test (killed):\n" + "\n".join(gateway.final_log[-40:])
                )


def cli_add_key(path: Path, name: str) -> str:
    """A new API key named ``name`` in the keys file ``path``, made by the real
    ``inference-gateway keys add``; the key it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "inference_gateway.cli", "keys", "add", name, "--file", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


__all__ = [
    "GatewayProcess",
    "cli_add_key",
    "free_port",
    "gateway_process",
    "has_accepted",
    "listening_ports",
    "read_http_response",
    "wait_until",
]


def read_http_response(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """Read one response with a ``Content-Length`` body (or none) from a raw socket.

    Returns the status, the head (status line and headers) and the body; the
    connection stays open. An interim ``100 Continue`` is a response of its own.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    return status, head, body


@contextmanager
def threaded_server(app: object, *, header_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on loopback in a thread of this process.

    For tests that need real sockets (disconnects, slow clients) and a controllable
    backend in the same process; the HTTP protocol is the one `serve` uses. Yields the
    base URL.
    """
    import threading

    import uvicorn

    from inference_gateway.api.protocol import http_protocol

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        http=http_protocol(header_timeout),  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
