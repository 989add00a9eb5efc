"""The README and docs/ say what the code does: settings, defaults, routes, answers, refusals."""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference_gateway import __version__
from inference_gateway.api.schemas import PredictionResponse
from inference_gateway.config import MIB, Settings
from inference_gateway.errors import InferenceGatewayException
from inference_gateway.inference.preprocess import INLINE_JPEG_PIXELS, INLINE_OTHER_PIXELS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {
    path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))
}
SETTING_NAMES = {name.upper(): name for name in Settings.model_fields}

#: How the configuration table writes a default that is not a literal value in backticks.
TABLE_WORDS: dict[str, object] = {"unset": None, "empty": [], "package version": __version__}
#: Units prose puts after a number: "10 MiB", "40 M" (millions), "30 s".
UNITS = {"MiB": MIB, "M": 1_000_000, "s": 1, "": 1}


#: The README's heading of the prediction routes.
PREDICT_HEADING = (
    "### `POST /predict`, `POST /models/{name}/predict`, "
    "`POST /models/{name}/versions/{version}/predict`"
)


def section(text: str, heading: str) -> str:
    """The body of the markdown section ``heading`` (up to the next heading of its level)."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n") + len(heading) + 1
    end = re.compile(rf"^{level} ", re.MULTILINE).search(text, start)
    return text[start : end.start() if end else len(text)]


def config_table() -> dict[str, str]:
    """``VARIABLE`` → its default cell, from the README's configuration table."""
    rows = re.findall(
        r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]+) \|", section(README, "## Configuration"), re.M
    )
    table = {name: cell.strip() for name, cell in rows}
    assert len(table) == len(rows), "a variable appears twice in the table"
    return table


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`Settings` as the code defines them: no `.env` file, no setting in the environment."""
    for variable in list(os.environ):
        if variable.upper() in SETTING_NAMES:
            monkeypatch.delenv(variable)
    return Settings(_env_file=None)


def rendered(value: object) -> object:
    """A default as the docs write it: ``true``, ``onnxruntime``, ``10``, ``0.995``, ``~/...``."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return "~/" + value.relative_to(Path.home()).as_posix()
    return str(value)


def table_default(cell: str) -> object:
    """The value a default cell states: its first backticked literal, or a known word."""
    literal = re.match(r"`([^`]*)`", cell)
    if literal:
        return literal.group(1)
    for word, value in TABLE_WORDS.items():
        if cell.startswith(word):
            return value
    raise AssertionError(
        f"unreadable default {cell!r}: use a `literal` or one of {list(TABLE_WORDS)}"
    )


def test_the_readme_table_lists_exactly_the_settings() -> None:
    assert set(config_table()) == set(SETTING_NAMES)


@pytest.mark.parametrize("variable", sorted(SETTING_NAMES))
def test_the_readme_table_states_each_settings_default(variable: str, defaults: Settings) -> None:
    cell = config_table().get(variable)
    assert cell is not None, f"{variable} is not in the README's configuration table"
    actual = getattr(defaults, SETTING_NAMES[variable])
    assert table_default(cell) == rendered(actual), f"{variable}: README says {cell!r}"
    for mebibytes in re.findall(r"\((\d+) MiB\)", cell):
        assert int(mebibytes) * MIB == actual, f"{variable}: README says {cell!r}"


def prose_defaults() -> list[tuple[str, str, str, str]]:
    """(file, VARIABLE, number, unit) for every default the docs' prose states.

    The forms: "`NAME` (default 5 s)", "(default `NAME`, 5)", and the list of request
    limits in docs/security.md ("`NAME` 10 MiB, ...").
    """
    number = r"(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s*(MiB|M|s)\b)?"
    found = []
    for name, text in {"README.md": README, **DOCS}.items():
        for pattern in (
            rf"`([A-Z][A-Z0-9_]*)` \(default:? {number}",
            rf"\(default `([A-Z][A-Z0-9_]*)`, {number}\)",
        ):
            found += [(name, *m) for m in re.findall(pattern, text)]
    limits = (
        DOCS["security.md"]
        .split("**Request limits are on by default**", 1)[1]
        .split("[tests/", 1)[0]
    )
    found += [("security.md", *m) for m in re.findall(rf"`([A-Z][A-Z0-9_]*)`\s+{number}", limits)]
    return [
        (file, variable, value, unit)
        for file, variable, value, unit in found
        if variable in SETTING_NAMES
    ]


def test_defaults_stated_in_prose_match_the_code(defaults: Settings) -> None:
    stated = prose_defaults()
    assert len({variable for _, variable, _, _ in stated}) >= 8  # the patterns still find them
    wrong = [
        (file, variable, f"{value} {unit}".strip())
        for file, variable, value, unit in stated
        if float(value.replace(",", "")) * UNITS[unit] != getattr(defaults, SETTING_NAMES[variable])
    ]
    assert wrong == []


def example_response() -> dict[str, object]:
    """The README's example answer of ``POST /predict``."""
    blocks = re.findall(r"```json\n(.*?)```", section(README, PREDICT_HEADING), re.S)
    answers = [json.loads(block) for block in blocks if '"predictions"' in block]
    assert len(answers) == 1
    answer: dict[str, object] = answers[0]
    return answer


def test_the_readme_example_response_is_a_valid_answer_of_the_default_model(
    defaults: Settings,
) -> None:
    answer = PredictionResponse.model_validate(example_response())
    assert answer.model.backend == defaults.model_backend.value
    assert (answer.model.name, answer.model.version) == (
        defaults.model_name,
        defaults.model_version,
    )
    confidences = [p.confidence for p in answer.predictions]
    assert confidences == sorted(confidences, reverse=True)


def test_the_readme_server_timing_example_matches_the_example_response() -> None:
    timings = example_response()["timings_ms"]
    header = re.search(r"\(`(preprocess;dur=[^`]*)`\)", section(README, PREDICT_HEADING))
    assert header is not None
    stated = dict(part.split(";dur=") for part in header.group(1).split(", "))
    assert {stage: float(ms) for stage, ms in stated.items()} == timings


def gateway_exceptions() -> list[type[InferenceGatewayException]]:
    """`InferenceGatewayException` and all its subclasses."""
    found: list[type[InferenceGatewayException]] = []
    pending: list[type[InferenceGatewayException]] = [InferenceGatewayException]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def reject_reasons() -> set[str]:
    """Every ``reject_reason`` of the gateway's exceptions (the ``reason`` of refusals)."""
    return {cls.reject_reason for cls in gateway_exceptions() if cls.reject_reason is not None}


def test_the_readme_lists_every_refusal_reason() -> None:
    listed = re.search(r"machine-readable `reason`\s*\(([^)]*)\)", README)
    assert listed is not None
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == reject_reasons()


def test_the_rejected_requests_metric_lists_every_refusal_reason() -> None:
    row = re.search(r"^\| `requests_rejected_total` \|.*$", DOCS["observability.md"], re.M)
    assert row is not None
    meaning = row.group(0).rsplit("|", 2)[1]
    assert set(re.findall(r"`([a-z_]+)`", meaning)) == reject_reasons()


def test_every_problem_type_is_in_the_readme_status_table() -> None:
    slugs = {cls.slug for cls in gateway_exceptions()}
    table = set(re.findall(r"^\| \d{3} \| `([a-z-]+)` \|", README, re.M))
    assert slugs - table == set()


def test_the_inline_decoding_thresholds_are_the_codes() -> None:
    jpeg, other = (
        f"JPEGs over {INLINE_JPEG_PIXELS / 1e6:g} MP",
        f"over {INLINE_OTHER_PIXELS / 1e6:g} MP",
    )
    for name, text in {"README.md": README, "architecture.md": DOCS["architecture.md"]}.items():
        flat = " ".join(text.split())
        assert jpeg in flat and other in flat, name


def test_every_route_is_in_the_readme(fake_client: TestClient) -> None:
    paths = {getattr(r, "path", "") for r in fake_client.app.routes}  # type: ignore[attr-defined]
    spec_paths = set(fake_client.get("/openapi.json").json()["paths"]) | {"/metrics", "/docs"}
    # The page (`/`) and /metrics are left out of the schema on purpose.
    for path in spec_paths | (paths & {"/metrics", "/"}):
        assert f"`GET {path}`" in README or f"`POST {path}`" in README, path
