"""What the model-quality signals cost: server CPU per image with and without them.

Two repositories hold the same built-in model; one version has a ``reference.json``
(made by ``inference-gateway profile`` from 200 variants of scikit-image's photographs),
the other none. Three servers run side by side with full observability: one with the
reference ("on"), one without ("off"), and a second one without (the A/A control,
which measures the harness's own spread); the "on" server is measured twice a round,
once as answers are sent by default and once with their ``quality`` object asked for
(``?quality=true``). Each round loads them in turn with a closed
loop of ``wrk`` at 32 connections sending one real JPEG photograph, for a few seconds
each, the order rotating every round, the queue bounded by its size only (no
refusals). Short turns on servers that stay up pair every "on" measurement with an
"off" one taken seconds apart, so a neighbour's noise on a shared VM hits both alike.

The cost is the median over rounds of on / off - 1, with a 90% bootstrap interval; the
same statistic for the A/A control says how large a difference the harness can see
when there is none. The target is under 2% more CPU per image with the signals.

    .venv/bin/python -m bench.quality_cost [--seconds 6] [--rounds 10]
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.http_bench import OBS_ON, Target, _script
from bench.paired import (
    CONNECTIONS,
    NO_REFUSALS,
    cost_line,
    cpu_ratios,
    medians_table,
    result_head,
    rotating_turns,
    side_by_side,
)
from bench.paired import main as paired_main
from inference_gateway.cli import main as cli_main
from inference_gateway.config import Settings
from inference_gateway.inference.onnx_export import export_to_repository
from tests.photo_variants import variants, write_set

MODEL = "efficientnet-lite0"


def _repositories(workdir: Path) -> tuple[Path, Path]:
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
    return with_reference, without


ON, OFF, CONTROL = (
    "signals on (a reference)",
    "signals off (no reference)",
    "A/A control (no reference)",
)
#: The "on" server again, its answers asked for their `quality` object.
ASKED = "signals on, answers with `quality=true`"


def run(seconds: float, rounds: int) -> dict[str, Any]:
    """Every round: each measurement in turn (the order rotating); per-round ratios of
    CPU per image against "off"."""
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        script = _script(workdir)
        with_reference, without = _repositories(workdir)
        roots = {ON: with_reference, OFF: without, CONTROL: without}
        targets = {
            name: Target(name, "gateway", {**OBS_ON, "MODEL_REPOSITORY": str(root), **NO_REFUSALS})
            for name, root in roots.items()
        }
        running = side_by_side(stack, workdir, script, targets)
        measured = {name: (running[name], "/predict") for name in running}
        measured[ASKED] = (running[ON], "/predict?quality=true")
        runs = rotating_turns(measured, script, rounds, seconds)
    return {
        **result_head(seconds, rounds, runs),
        "cpu_ratios": cpu_ratios(runs[ON], runs[OFF]),
        "asked_ratios": cpu_ratios(runs[ASKED], runs[OFF]),
        "control_ratios": cpu_ratios(runs[CONTROL], runs[OFF]),
    }


def markdown(result: dict[str, Any]) -> str:
    """A row per server (medians), the paired cost and the A/A control."""
    lines = [
        "# Model-quality signals: CPU per image with and without them",
        "",
        f"`.venv/bin/python -m bench.quality_cost --seconds {result['seconds']:g} "
        f"--rounds {result['rounds']}`, {machine()}, {result['when']}: three servers side "
        "by side (see the module's docstring), each loaded in turn every round by `wrk` "
        f'at {CONNECTIONS} connections; medians, and per-round ratios against "off". '
        "What the figures mean and how the cost came down: "
        "[docs/performance.md](../../docs/performance.md#model-quality-signals-cost).",
        "",
        *medians_table(result["runs"], "server"),
        "",
    ]
    for label, key in (("CPU per image with the signals", "cpu_ratios"),
                       ("... and answers with their `quality` object", "asked_ratios"),
                       ("A/A control (two servers without them)", "control_ratios")):  # fmt: skip
        lines.append(cost_line(label, result[key]))
    lines.append("\nTarget: under +2% with the signals (the answers as sent by default).")
    return "\n".join(lines)


def main() -> None:
    """Run and print the table."""
    paired_main("quality_cost", lambda a: run(a.seconds, a.rounds), markdown, rounds=10)


if __name__ == "__main__":
    main()
