"""The test's side of tests/gated_app.py: its control directory, as an object."""

from __future__ import annotations

from pathlib import Path


class Gate:
    """The control directory of tests/gated_app.py (``GATE_DIR``)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def close(self) -> None:
        """Every forward pass waits from now on (the model "hangs")."""
        (self.dir / "closed").touch()

    def open(self) -> None:
        """Forward passes run again."""
        (self.dir / "closed").unlink(missing_ok=True)

    def delay(self, ms: float) -> None:
        """Each forward pass costs ``ms`` milliseconds more."""
        (self.dir / "delay_ms").write_text(str(ms))

    def calls(self) -> list[int]:
        """The batch size of every forward pass so far, all workers together."""
        path = self.dir / "calls"
        return [int(n) for n in path.read_text().split()] if path.exists() else []

    def passes(self) -> int:
        """Forward passes so far, all workers together."""
        return len(self.calls())
