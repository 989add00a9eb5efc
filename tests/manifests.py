"""What the offline checks of deployment manifests share (KServe, Kubernetes): the
project's facts they compare against, and `Settings` built from a manifest's env."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest
from pydantic import ValidationError

from inference_gateway.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
PROJECT_VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["version"]
SETTING_NAMES = {name.upper(): name for name in Settings.model_fields}
#: Standard OpenTelemetry variables the SDK reads itself (README: Configuration).
STANDARD_OTEL = frozenset(
    {
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    }
)


def clear_settings_env(monkeypatch: pytest.MonkeyPatch, also: Iterable[str] = ()) -> None:
    """Remove this process's setting variables: Settings built from a manifest's env
    must see that env only."""
    extra = set(also)
    for variable in list(os.environ):
        if variable.upper() in SETTING_NAMES or variable in extra:
            monkeypatch.delenv(variable)


def settings_from(
    env: dict[str, str], also_allowed: Iterable[str] = ()
) -> tuple[Settings | None, list[str]]:
    """``Settings`` from a manifest's env, or the problems that prevent it.
    ``also_allowed``: other variables the manifest may set (``TMPDIR``)."""
    unknown = sorted(set(env) - set(SETTING_NAMES) - STANDARD_OTEL - set(also_allowed))
    if unknown:
        return None, [
            f"env: {name} is neither a setting nor a standard OTEL_ variable" for name in unknown
        ]
    values = {SETTING_NAMES[name]: value for name, value in env.items() if name in SETTING_NAMES}
    try:
        return Settings(**values, _env_file=None), []  # type: ignore[arg-type]
    except ValidationError as exc:
        return None, [
            f"env: {'_'.join(map(str, e['loc'])).upper()}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        ]
