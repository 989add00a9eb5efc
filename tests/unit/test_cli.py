"""The command line: ``predict`` classifies files without a server; bad config exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference_gateway.cli import main
from tests.images import CAT_PNG, COFFEE_PNG


def test_predict_prints_a_table_with_the_cat(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert str(CAT_PNG) in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert {int(r[1]) for r in rows} & set(range(281, 286))


def test_predict_json_for_several_images(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), str(COFFEE_PNG), "--json", "--top-k", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["predictions"][0]["class_id"] == 967


def test_predict_reports_unreadable_and_invalid_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", str(text), str(tmp_path / "missing.jpg")]) == 1
    out = capsys.readouterr().out
    assert "notes.txt: error:" in out and "missing.jpg: error:" in out


def test_predict_rejects_bad_top_k(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(CAT_PNG), "--top-k", "0"]) == 2


def test_invalid_configuration_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "lots")
    assert main(["serve"]) == 2
    assert "MAX_IMAGE_PIXELS" in capsys.readouterr().err
