"""The Makefile's recipes fail when any step of a pipeline fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.tools import unavailable

ROOT = Path(__file__).resolve().parents[2]


def test_a_failing_command_piped_into_tee_fails_the_target(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        unavailable("make is not installed")
    # `make bench` pipes each benchmark into `tee`: without pipefail a crashed benchmark
    # left a truncated table behind and the target still succeeded.
    probe = f"pipeline-probe: ; false | tee {tmp_path / 'out.md'}"
    completed = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "--eval", probe, "pipeline-probe"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0, completed.stdout + completed.stderr
    assert (tmp_path / "out.md").exists()  # the pipeline did run
