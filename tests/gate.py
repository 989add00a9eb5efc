"""The test's side of tests/gated_app.py: its control directory, as an object."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from tests.helpers import wait_until
from tests.images import cat_jpeg
from tests.scrape import parse, value


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


def predict(url: str, timeout_ms: int | None = None) -> httpx.Response:
    """One ``/predict`` of the cat photo (``X-Request-Timeout-Ms``: ``timeout_ms``)."""
    headers = {"content-type": "image/jpeg"}
    if timeout_ms is not None:
        headers["x-request-timeout-ms"] = str(timeout_ms)
    return httpx.post(f"{url}/predict", content=cat_jpeg(), headers=headers, timeout=60)


def fill_queue(
    gate: Gate, url: str, pool: ThreadPoolExecutor, queue: int
) -> list[Future[httpx.Response]]:
    """Close ``gate``, hold one prediction in the model and ``queue`` behind it (the
    server's ``MAX_QUEUE_SIZE``, batches of one): from then on every prediction is
    refused (queue_full) until the gate opens. Returns the held predictions."""
    calls = len(gate.calls())
    gate.close()
    held = [pool.submit(predict, url)]
    wait_until(lambda: len(gate.calls()) == calls + 1, what="one request in the model")
    held += [pool.submit(predict, url) for _ in range(queue)]
    wait_until(
        lambda: value(
            parse(httpx.get(f"{url}/metrics", timeout=10).text),
            "inference_queue_size", model_name="efficientnet-lite0", model_version="1",
        ) == queue + 1,
        what="the queue to fill",
    )  # fmt: skip
    return held
