"""The ceiling: decode + preprocess + forward pass in-process, no HTTP.

Images per second for JPEG photos at several batch sizes, as one process with two
intra-op threads and as two processes with one thread each (decoding on one core can
overlap the forward pass on the other). The best figure is what the gateway chases.

    .venv/bin/python -m bench.limit [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from statistics import fmean
from typing import Any, NamedTuple

import numpy as np

from bench.common import RAW, machine, median, photo_jpeg


class Measured(NamedTuple):
    """One measurement of a layout: images/s summed over its processes, and CPU
    milliseconds per image (mean of the processes): in all, in decoding and
    preprocessing (the batch's stacking included), in the forward pass."""

    rate: float
    cpu_ms: float
    preprocess_ms: float
    forward_ms: float


def _worker(backend: str, threads: int, batch_size: int, seconds: float, queue: Any) -> None:
    from inference_gateway.config import Settings
    from inference_gateway.inference.model import load_model
    from inference_gateway.inference.preprocess import ImageLimits, prepare_image

    settings = Settings(_env_file=None)
    model = load_model("efficientnet-lite0", "1", backend, "cpu", threads, settings.model_cache_dir)
    data = photo_jpeg()
    limits, config = ImageLimits(), model.spec.preprocess
    spent = [0.0, 0.0]  # CPU seconds: decode + preprocess + stack, forward pass

    def step() -> None:
        started = time.process_time()
        batch = np.stack([prepare_image(data, limits, config).tensor for _ in range(batch_size)])
        prepared = time.process_time()
        model.backend.predict(batch)
        spent[0] += prepared - started
        spent[1] += time.process_time() - prepared

    for _ in range(3):
        step()
    spent[:] = [0.0, 0.0]
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        step()
        done += batch_size
    cpu_ms = (time.process_time() - cpu_started) / done * 1000
    rate = done / (time.perf_counter() - started)
    queue.put(Measured(rate, cpu_ms, spent[0] / done * 1000, spent[1] / done * 1000))


def measure(
    backend: str, processes: int, threads: int, batch_size: int, seconds: float
) -> Measured:
    """``processes`` fresh processes running at once: images per second summed, and the
    CPU milliseconds each image cost (all threads of a process, mean of processes)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(backend, threads, batch_size, seconds, queue))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return Measured(
        float(sum(r.rate for r in results)),
        fmean(r.cpu_ms for r in results),
        fmean(r.preprocess_ms for r in results),
        fmean(r.forward_ms for r in results),
    )


LAYOUTS = [(1, 2), (2, 1)]  # (processes, threads per process)
#: `Measured` fields kept per cell, each as a median over repeats.
CPU_PARTS = ("cpu_ms", "preprocess_ms", "forward_ms")


def run(backend: str, seconds: float, repeats: int, batch_sizes: list[int]) -> dict[str, Any]:
    """Median images/s (and CPU ms per image, in all and by part) per (layout, batch
    size); the best."""
    table: dict[str, list[float]] = {}
    cpu: dict[str, dict[str, list[float]]] = {part: {} for part in CPU_PARTS}
    for _ in range(repeats):
        for processes, threads in LAYOUTS:
            for batch_size in batch_sizes:
                key = f"{processes}x{threads}/b{batch_size}"
                measured = measure(backend, processes, threads, batch_size, seconds)
                table.setdefault(key, []).append(measured.rate)
                for part in CPU_PARTS:
                    cpu[part].setdefault(key, []).append(getattr(measured, part))
    medians = {k: median(v) for k, v in table.items()}
    best = max(medians, key=medians.__getitem__)
    return {
        "backend": backend,
        "runs": table,
        "median": medians,
        **{part: {k: median(v) for k, v in cpu[part].items()} for part in CPU_PARTS},
        "cpu_runs": cpu,
        "best": best,
        "limit": medians[best],
    }


def markdown(result: dict[str, Any]) -> str:
    """The table of one backend's ceiling."""
    lines = [
        f"Ceiling without HTTP, backend `{result['backend']}` (medians; CPU ms per image "
        "counts every thread of the process; of it, decoding and preprocessing with the "
        "batch's stacking, and the forward pass):",
        "",
        "| layout | batch | images/s | CPU ms/image | decode + preprocess | forward pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, value in result["median"].items():
        layout, batch = key.split("/b")
        processes, threads = layout.split("x")
        mark = " **best**" if key == result["best"] else ""
        lines.append(
            f"| {processes} process × {threads} thread | {batch} | {value:.0f}{mark} "
            f"| {result['cpu_ms'][key]:.1f} | {result['preprocess_ms'][key]:.1f} "
            f"| {result['forward_ms'][key]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Print the ceiling tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    result = run(args.backend, args.seconds, args.repeats, [1, 4, 8])
    print(machine())
    print(markdown(result))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"limit-{args.backend}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
