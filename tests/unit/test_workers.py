"""The board of forward passes the worker processes share (`PassBoardSlot`)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_gateway.inference.workers import BOARD_SLOTS, PassBoardSlot

#: A worker elsewhere: claims a slot in argv[1] and runs a pass from "begin" to "end".
PEER = """
import sys
from inference_gateway.inference.workers import PassBoardSlot
slot = PassBoardSlot(sys.argv[1])
print(slot.index, flush=True)
for line in sys.stdin:
    getattr(slot, line.strip())()
    print("done", flush=True)
"""


class Peer:
    """A process with its own slot on the board, driven one command at a time."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PEER, str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.index = int(self.process.stdout.readline())

    def do(self, command: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()  # the loop over stdin ends
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    started = Peer(tmp_path)
    yield started
    started.stop()


def test_a_pass_is_alone_only_while_no_other_slot_runs_one(tmp_path: Path) -> None:
    mine, other = PassBoardSlot(tmp_path, quiet_seconds=0), PassBoardSlot(tmp_path, quiet_seconds=0)
    assert mine.begin()
    mine.end()
    assert other.begin()  # mine ended: other is alone
    assert not mine.begin()  # other runs
    assert mine.others_running() == 1
    other.end()
    mine.end()
    assert mine.others_running() == 0
    assert mine.begin()
    mine.end()


def test_a_slot_whose_pass_ended_just_now_still_counts_as_busy(tmp_path: Path) -> None:
    # Under load a worker's event loop decodes the next requests between its passes.
    mine, other = PassBoardSlot(tmp_path), PassBoardSlot(tmp_path, quiet_seconds=3600)
    waiting = PassBoardSlot(tmp_path, quiet_seconds=3600)
    other.begin()
    other.end()
    assert not waiting.begin()
    waiting.end()
    mine.close()


def test_two_processes_see_each_others_passes(tmp_path: Path, peer: Peer) -> None:
    mine = PassBoardSlot(tmp_path, quiet_seconds=0)
    assert mine.index != peer.index
    peer.do("begin")
    assert mine.others_running() == 1
    assert not mine.begin()
    mine.end()
    peer.do("end")
    assert mine.others_running() == 0
    assert mine.begin()
    mine.end()


def test_a_worker_that_died_during_a_pass_is_forgotten_by_the_next_claim(
    tmp_path: Path, peer: Peer
) -> None:
    mine = PassBoardSlot(tmp_path, quiet_seconds=0)
    peer.do("begin")
    peer.kill()
    assert mine.others_running() == 1  # the byte is still set...
    replacement = PassBoardSlot(tmp_path)  # ...until a worker claims a slot
    assert replacement.index == peer.index  # the dead one's, free again
    assert mine.others_running() == 0
    assert mine.begin()


def test_a_pass_running_for_longer_than_the_stale_limit_is_ignored(tmp_path: Path) -> None:
    hung = PassBoardSlot(tmp_path)
    hung.begin()
    assert not PassBoardSlot(tmp_path, quiet_seconds=0).begin()
    assert PassBoardSlot(tmp_path, quiet_seconds=0, stale_seconds=0).begin()


def test_slots_are_distinct_within_a_process_and_freed_on_close(tmp_path: Path) -> None:
    first, second = PassBoardSlot(tmp_path), PassBoardSlot(tmp_path)
    assert (first.index, second.index) == (0, 1)
    first.begin()
    first.close()
    first.close()  # idempotent
    third = PassBoardSlot(tmp_path, quiet_seconds=0)
    assert third.index == 0
    assert third.others_running() == 0  # close cleared the running pass


def test_the_board_refuses_a_claim_when_every_slot_is_taken(tmp_path: Path) -> None:
    slots = [PassBoardSlot(tmp_path) for _ in range(BOARD_SLOTS)]
    with pytest.raises(OSError, match="slots are taken"):
        PassBoardSlot(tmp_path)
    for slot in slots:
        slot.close()
