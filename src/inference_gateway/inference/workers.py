"""State shared by the worker processes of one server: readiness, and running passes.

With ``serve --workers N`` every worker answers ``/ready`` for itself, so while one
worker is still loading its model a load balancer that saw 200 from another would send
it traffic it answers with 503. Workers therefore record their readiness as files in a
directory the parent created (``WORKER_STATE_DIR``): ``ready-<pid>`` while ready. A
worker reports ready only when ``N`` live workers have such a file; files of processes
that died are ignored, so a crashed worker cannot hold readiness either way.

The same directory holds a board of the forward passes running now (`PassBoardSlot`),
so that a pass can use every core when it is the only one on the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt


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


#: The board of forward passes in ``WORKER_STATE_DIR``: one int64 per slot.
BOARD_NAME = "forward-passes"
#: Slots on the board: one per model version per worker (4 workers x 64 versions).
BOARD_SLOTS = 256
#: A worker whose last pass ended less than this ago counts as busy: under load its
#: event loop is reading and decoding the next requests between passes.
QUIET_SECONDS = 0.02
#: A pass marked running for longer than this is ignored (its worker hangs or died).
STALE_SECONDS = 60.0


class PassBoardSlot:
    """One backend's slot on the board of forward passes, shared by the workers.

    The board is a file of `BOARD_SLOTS` int64 in the workers' state directory, mapped
    into every worker. A slot holds minus the start of its backend's running pass, or
    the end of its last one (``CLOCK_MONOTONIC`` nanoseconds, shared by the processes
    of the machine), or 0 before the first. A pass costs two writes and a scan of 2 KiB,
    no lock and no system call.

    A pass is *alone* when no other slot's pass runs and none ended in the last
    `QUIET_SECONDS`: a worker between passes under load is still busy decoding. A slot
    is owned by whoever holds the ``flock`` of its file ``forward-passes-<n>.lock``;
    the kernel drops it when the owner dies, and whoever claims a slot clears every
    slot nobody owns. A pass marked running for more than `STALE_SECONDS` is ignored,
    so a worker that died or hangs during a pass cannot keep the others narrow.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        quiet_seconds: float = QUIET_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        """Claim the first free slot on the board in ``directory`` (created if missing).

        Raises `OSError` when every slot is taken.
        """
        self.directory = Path(directory)
        self._quiet_ns = int(quiet_seconds * 1e9)
        self._stale_ns = int(stale_seconds * 1e9)
        size = BOARD_SLOTS * 8
        board = os.open(self.directory / BOARD_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(board).st_size < size:  # never shrink it: others map it
                os.ftruncate(board, size)
            self._board = mmap.mmap(board, size)
        finally:
            os.close(board)  # the mapping stays valid
        self._slots: npt.NDArray[np.int64] = np.frombuffer(self._board, dtype=np.int64)
        try:
            self.index, self._lock = self._claim()
            self._clear_unowned()
        except BaseException:
            del self._slots
            self._board.close()
            raise

    def _claim(self) -> tuple[int, int]:
        for index in range(BOARD_SLOTS):
            lock = self._try_lock(index)
            if lock is not None:
                self._slots[index] = 0
                return index, lock
        raise OSError(f"{self.directory}: all {BOARD_SLOTS} forward-pass slots are taken")

    def _try_lock(self, index: int) -> int | None:
        path = self.directory / f"{BOARD_NAME}-{index}.lock"
        lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return None
        return lock

    def _clear_unowned(self) -> None:
        """Clear the slots that nobody owns (left by workers that died)."""
        for path in self.directory.glob(f"{BOARD_NAME}-*.lock"):
            index = path.name.removeprefix(f"{BOARD_NAME}-").removesuffix(".lock")
            if not index.isdigit() or int(index) == self.index or int(index) >= BOARD_SLOTS:
                continue
            lock = self._try_lock(int(index))
            if lock is not None:
                self._slots[int(index)] = 0
                os.close(lock)  # closing the only descriptor releases the lock

    def begin(self) -> bool:
        """Mark this slot's pass running; True when the pass is alone on the machine.

        The slot is marked before the others are read, so of two passes that begin at
        the same moment at least one sees the other.
        """
        now = time.monotonic_ns()
        self._slots[self.index] = -now
        return not (self._running(now) | (self._slots > now - self._quiet_ns)).any()

    def end(self) -> None:
        """Mark this slot's pass finished, now."""
        self._slots[self.index] = time.monotonic_ns()

    def others_running(self) -> int:
        """How many other slots' passes run now (stale ones not counted)."""
        return int(np.count_nonzero(self._running(time.monotonic_ns())))

    def _running(self, now: int) -> npt.NDArray[np.bool_]:
        """Which other slots' passes run and started less than `STALE_SECONDS` ago."""
        slots = self._slots
        running: npt.NDArray[np.bool_] = (slots < 0) & (slots < self._stale_ns - now)
        running[self.index] = False
        return running

    def close(self) -> None:
        """Clear and give up the slot (idempotent)."""
        if self._board.closed:
            return
        self._slots[self.index] = 0
        del self._slots
        self._board.close()
        os.close(self._lock)
