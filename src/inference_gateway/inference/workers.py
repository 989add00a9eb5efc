"""Readiness across the worker processes of one server.

With ``serve --workers N`` every worker answers ``/ready`` for itself, so while one
worker is still loading its model a load balancer that saw 200 from another would send
it traffic it answers with 503. Workers therefore record their readiness as files in a
directory the parent created (``WORKER_STATE_DIR``): ``ready-<pid>`` while ready. A
worker reports ready only when ``N`` live workers have such a file; files of processes
that died are ignored, so a crashed worker cannot hold readiness either way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


class WorkerReadiness:
    """This worker's entry in the shared readiness directory."""

    def __init__(self, directory: str | os.PathLike[str], expected: int) -> None:
        """``expected``: how many workers must be ready for any to report ready."""
        self.directory = Path(directory)
        self.expected = expected
        self._mine = self.directory / f"ready-{os.getpid()}"

    def mark_ready(self) -> None:
        """Record that this worker serves."""
        self._mine.touch()

    def mark_stopped(self) -> None:
        """Withdraw this worker (at shutdown)."""
        with contextlib.suppress(FileNotFoundError):
            self._mine.unlink()

    def ready_count(self) -> int:
        """Live workers that are ready now."""
        count = 0
        for entry in self.directory.glob("ready-*"):
            pid = entry.name.removeprefix("ready-")
            if pid.isdigit() and _alive(int(pid)):
                count += 1
        return count

    def all_ready(self) -> bool:
        """Whether ``expected`` live workers are ready."""
        return self.ready_count() >= self.expected
