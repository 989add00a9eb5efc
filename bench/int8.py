"""The INT8 version against its FP32 source, served side by side, paired in one run.

One server (two workers, the defaults) serves a repository holding the built-in model
(version 1, FP32) and the INT8 version 2 that ``inference-gateway quantize`` made of it
from 200 variants of scikit-image's photographs (300 others held out). `bench.paired`
loads the two versions' routes in rotating turns with ``wrk`` sending one real JPEG
photograph: at 32 connections (images/s, p99, server CPU per image) and at one
connection (a lone request's p50). Only one version is loaded at a time, so the
server's CPU in a turn is that version's. The goal: INT8 at least 1.5× FP32's images/s.

    .venv/bin/python -m bench.int8 [--seconds 6] [--rounds 6]
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import machine, median
from bench.http_bench import OBS_ON, Target, _script, run_wrk, server
from bench.paired import (
    NO_REFUSALS,
    cost_line,
    cpu_ratios,
    medians_table,
    result_head,
    rotating_turns,
)
from bench.paired import main as paired_main
from inference_gateway.config import Settings
from tests.quantized import MODEL, quantized_repository

FP32, INT8 = "FP32 (version 1)", "INT8 (version 2, `quantize`)"
PATHS = {FP32: f"/models/{MODEL}/versions/1/predict", INT8: f"/models/{MODEL}/versions/2/predict"}


def run(seconds: float, rounds: int) -> dict[str, Any]:
    """Both versions in turns at 32 connections, then at one; and the quantization report."""
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        script = _script(workdir)
        with contextlib.redirect_stdout(sys.stderr):  # the command's own line: not the table
            repository = quantized_repository(
                workdir, Settings(_env_file=None).model_cache_dir, 200, 300
            )
        report = json.loads((repository / MODEL / "2" / "quantization.json").read_text())
        env = {**OBS_ON, "MODEL_REPOSITORY": str(repository), **NO_REFUSALS}
        running = stack.enter_context(server(Target("int8", "gateway", env), workdir))
        for path in PATHS.values():
            run_wrk(running, script, 4, 2, path)  # warm-up
        measured = {name: (running, path) for name, path in PATHS.items()}
        loaded = rotating_turns(measured, script, rounds, seconds)
        lone = rotating_turns(measured, script, rounds, seconds, connections=1)
    return {
        **result_head(seconds, rounds, loaded),  # runs: at 32 connections
        "lone": lone,
        "throughput_ratios": [
            a["rps"] / b["rps"] for a, b in zip(loaded[INT8], loaded[FP32], strict=True)
        ],
        "cpu_ratios": cpu_ratios(loaded[INT8], loaded[FP32]),
        "quantization": report,
    }


def markdown(result: dict[str, Any]) -> str:
    """Both versions' medians at 32 connections and at one, the paired ratios, and how
    far the INT8 answers agree with FP32's."""
    q = result["quantization"]
    ratios = result["throughput_ratios"]
    return "\n".join(
        [
            "# INT8 against FP32: the built-in model, served side by side",
            "",
            f"`.venv/bin/python -m bench.int8 --seconds {result['seconds']:g} --rounds "
            f"{result['rounds']}`, {machine()}, {result['when']}: one server, both versions, "
            "loaded in turns by `wrk` (see the module's docstring); medians.",
            "",
            *medians_table(result["runs"], "version"),
            "",
            *medians_table(result["lone"], "version", connections=1),
            "",
            f"- images/s, INT8 over FP32: **{median(ratios):.2f}×** per round: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + " (goal: at least 1.5×)",
            cost_line("CPU per image, INT8 against FP32", result["cpu_ratios"]),
            f"- Agreement (quantization.json; {q['calibration_images']} calibration and "
            f"{q['holdout_images']} hold-out variants of scikit-image's photographs, method "
            f"{q['method']}): top-1 **{q['confident_agreement']:.1%}** on the "
            f"{q['holdout_confident_images']} hold-out images where FP32 is confident (top-1 "
            f"above {q['confident_threshold']}), {q['top1_agreement']:.1%} on all; top-5 "
            f"overlap {q['top5_overlap']:.1%}; mean KL divergence "
            f"{q['mean_kl_divergence']:.4f}; one thread, batch 4: "
            f"{q['speed']['int8_images_per_second']:.0f} against "
            f"{q['speed']['source_images_per_second']:.0f} images/s.",
        ]
    )


def main() -> None:
    """Run and print the table."""
    paired_main("int8", lambda a: run(a.seconds, a.rounds), markdown, rounds=6)


if __name__ == "__main__":
    main()
