"""A worker's wake-up: the named pipe its metrics-publishing thread sleeps in.

A scrape asks every other worker to publish (`metrics.SignalRegistry`); a byte written
to a worker's pipe wakes its thread at once, so that thread never wakes for nothing (a
thread that looked every few milliseconds cost a saturated worker CPU at each wake: it
waits for the interpreter's lock, which the serving thread holds between short system
calls). A pipe is made under a temporary name and renamed once its worker holds it
open, so a pipe nobody reads belongs to a worker that is gone, and a scrape removes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import stat
import threading
import weakref
from pathlib import Path

SUFFIX = ".wake"
#: The shortest sleep (a flush interval of zero must not make the thread spin).
MIN_SLEEP_SECONDS = 0.01


class WakePipe:
    """One worker's named pipe, opened for reading and writing (it never reads as
    closed when a scrape's writer leaves); thread-safe."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._inode = os.fstat(fd).st_ino
        self._lock = threading.Lock()  # the descriptor is never used once closed
        _OPEN.add(self)

    @classmethod
    def make(cls, path: Path) -> WakePipe | None:
        """The pipe ``path``, made and opened; None where named pipes cannot be made (a
        file system without them, a platform without ``mkfifo``)."""
        partial = path.with_name(f".{path.name}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            os.mkfifo(partial)
            fd = os.open(partial, os.O_RDWR | os.O_NONBLOCK)
        except (OSError, AttributeError):  # AttributeError: no mkfifo on this platform
            with contextlib.suppress(OSError):
                partial.unlink()
            return None
        try:
            os.replace(partial, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                partial.unlink()
            return None
        return cls(path, fd)

    def wait(self, seconds: float) -> None:
        """Sleep until a byte arrives or ``seconds`` pass (at least `MIN_SLEEP_SECONDS`);
        every byte that arrived is read: one wake answers them all."""
        fd = self._fd
        if fd is None:
            return
        poller = select.poll()  # not select(): a descriptor may be above 1023
        poller.register(fd, select.POLLIN)
        if poller.poll(max(seconds, MIN_SLEEP_SECONDS) * 1000):
            with contextlib.suppress(OSError):
                os.read(fd, 4096)

    def wake(self) -> None:
        """Wake the thread sleeping in this pipe (`close` of its registry)."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):  # full: a wake is waiting already
                    os.write(self._fd, b"!")

    def intact(self) -> bool:
        """Whether ``path`` still names this pipe (not removed, not replaced)."""
        try:
            return os.lstat(self.path).st_ino == self._inode
        except OSError:
            return False

    def close(self) -> None:
        """Close it, and remove ``path`` if it still names this pipe."""
        with self._lock:
            if self._fd is None:
                return
            if self.intact():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def forget(self) -> None:
        """In a forked child: close the parent's descriptor, leave its path."""
        with contextlib.suppress(OSError):
            if self._fd is not None:
                os.close(self._fd)
        self._fd = None


#: The pipes open in this process (closed in a forked child: `WakePipe.forget`).
_OPEN: weakref.WeakSet[WakePipe] = weakref.WeakSet()


def _forget_all() -> None:
    for pipe in list(_OPEN):
        pipe.forget()


os.register_at_fork(after_in_child=_forget_all)


def worker_pipes(directory: Path, prefix: str) -> list[Path]:
    """The pipes named ``<prefix><pid>-<start>.wake`` in ``directory``."""
    pattern = re.compile(re.escape(prefix) + r"\d+-\d+" + re.escape(SUFFIX))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [directory / name for name in names if pattern.fullmatch(name)]


def poke(path: Path) -> None:
    """Wake the worker sleeping in the pipe ``path``; remove the pipe when nobody has
    it open (its worker is gone). Anything at ``path`` that is not a named pipe (a
    link, a file) is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a pipe (or socket) without a reader
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.lstat(path).st_mode):
                    path.unlink()
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            with contextlib.suppress(OSError):  # full: the worker has a wake waiting
                os.write(fd, b"!")
    finally:
        os.close(fd)
