"""Settings: defaults, environment variables, and errors that name the variable."""

from __future__ import annotations

import pytest

from inference_gateway.config import ConfigError, LogFormat, Settings, load_settings


def test_defaults_serve_a_laptop(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.max_image_pixels == 40_000_000
    assert settings.top_k_default == 5
    assert settings.cors_origins == []
    assert settings.effective_log_format is LogFormat.CONSOLE  # development default


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("ENABLE_METRICS", "false")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    settings = load_settings(_env_file=None)
    assert settings.port == 9001
    assert settings.log_level.value == "DEBUG"
    assert settings.enable_metrics is False
    assert settings.effective_log_format is LogFormat.JSON
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / ".env").write_text("TOP_K_DEFAULT=3\nMODEL_WARMUP=false\n")
    monkeypatch.chdir(directory)
    settings = Settings()
    assert settings.top_k_default == 3
    assert settings.model_warmup is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "70000"),
        ("PORT", "eighty"),
        ("WORKERS", "0"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("MAX_BODY_BYTES", "-1"),
        ("MODEL_BACKEND", "tensorflow"),
        ("TOP_K_DEFAULT", "50"),
        ("ENABLE_TRACING", "perhaps"),
        ("SLO_AVAILABILITY_TARGET", "1.5"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert variable in str(info.value)
    assert value.lower() in str(info.value).lower()
