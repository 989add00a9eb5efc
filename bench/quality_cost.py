"""What the model-quality signals cost: server CPU per image with and without them.

Two repositories hold the same built-in model; one version has a ``reference.json``
(made by ``inference-gateway profile`` from 200 variants of scikit-image's photographs),
the other none. Both serve with full observability, taking turns within every repeat
(each goes first in every other repeat, so a noisy neighbour hits them alike), under a closed loop of ``wrk`` at 32 connections
sending one real JPEG photograph, the queue bounded by its size only (no refusals); the table reports medians and the ratio per repeat.
The target is under 2% more CPU per image with the signals.

    .venv/bin/python -m bench.quality_cost [--seconds 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from tests.photo_variants import variants, write_set

from bench.common import RAW, median
from bench.http_bench import OBS_ON, Target, _script, run_wrk, server
from inference_gateway.cli import main as cli_main
from inference_gateway.config import Settings
from inference_gateway.inference.onnx_export import export_to_repository

MODEL = "efficientnet-lite0"
CONNECTIONS = 32
#: A closed loop of 32 connections queues more than `MAX_QUEUE_WAIT_MS` allows: its
#: refusals would be CPU charged to the answered images. Bounded by the queue's size
#: only, every request is answered and the CPU per image is the pipeline's own.
NO_REFUSALS = {"MAX_QUEUE_WAIT_MS": "0"}


def _repositories(workdir: Path) -> dict[str, Path]:
    """A repository whose version has a reference, and one whose version has none."""
    cache = Settings(_env_file=None).model_cache_dir
    with_reference, without = workdir / "with-reference", workdir / "without"
    for root in (with_reference, without):
        export_to_repository(root, cache)
    images = workdir / "reference-images"
    write_set(images, variants(200, seed=1), seed=11)
    status = cli_main(
        ["profile", MODEL, "--images", str(images), "--repository", str(with_reference)]
    )
    if status != 0:
        raise RuntimeError("profile failed")
    return {"signals on (a reference)": with_reference, "signals off (no reference)": without}


def run(seconds: float, repeats: int) -> dict[str, Any]:
    """Each repeat: both configurations in turn; per-repeat ratios of CPU per image."""
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        workdir = Path(tmp)
        script = _script(workdir)
        repositories = _repositories(workdir)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in repositories}
        for repeat in range(repeats):
            order = list(repositories.items())
            for name, root in order[::-1] if repeat % 2 else order:  # each goes first in turn
                env = {**OBS_ON, "MODEL_REPOSITORY": str(root), **NO_REFUSALS}
                target = Target(name, "gateway", env)
                with server(target, workdir) as running:
                    run_wrk(running, script, 4, 2)  # warm-up
                    runs[name].append(run_wrk(running, script, CONNECTIONS, seconds))
    on, off = (runs[name] for name in repositories)
    ratios = [a["server_cpu_ms"] / b["server_cpu_ms"] for a, b in zip(on, off, strict=True)]
    return {"seconds": seconds, "repeats": repeats, "runs": runs, "cpu_ratios": ratios}


def markdown(result: dict[str, Any]) -> str:
    """A row per configuration (medians), and the paired ratio."""
    lines = [
        f"| configuration (c={CONNECTIONS}) | images/s | p50 ms | p99 ms | server CPU ms/image |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in result["runs"].items():
        m = {key: median([r[key] for r in runs]) for key in runs[0]}
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.0f} "
            f"| {m['server_cpu_ms']:.2f} |"
        )
    ratios = result["cpu_ratios"]
    extra = median(ratios) - 1
    lines += [
        "",
        f"CPU per image with the signals: **{extra:+.1%}** (median of {len(ratios)} paired "
        f"repeats: {', '.join(f'{r - 1:+.1%}' for r in ratios)}; target under +2%).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.seconds, args.repeats)
    print(markdown(result))
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / "quality_cost.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
