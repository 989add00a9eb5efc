"""Settings: defaults, environment variables, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_gateway import config
from inference_gateway.config import (
    ConfigError,
    LogFormat,
    Settings,
    load_settings,
    usable_cores,
)
from tests.helpers import make_settings


def test_defaults_serve_a_laptop(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 0)  # per core
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
        ("WORKERS", "-1"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("MAX_BODY_BYTES", "-1"),
        ("MODEL_BACKEND", "tensorflow"),
        ("TOP_K_DEFAULT", "50"),
        ("ENABLE_TRACING", "perhaps"),
        ("SLO_AVAILABILITY_TARGET", "1.5"),
        ("GRPC_PORT", "0"),
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


def test_grpc_port_without_the_grpc_packages_fails_at_start_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "GRPC_PACKAGES", ("grpc", "no_such_grpc_package.stubs"))
    monkeypatch.setenv("GRPC_PORT", "50051")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "GRPC_PORT" in message and "no_such_grpc_package.stubs" in message
    assert "pip install 'inference-gateway[grpc]'" in message
    monkeypatch.delenv("GRPC_PORT")
    assert load_settings(_env_file=None).grpc_port is None  # off: nothing is needed


@pytest.mark.parametrize("other", ["PORT", "METRICS_PORT"])
def test_grpc_port_must_not_be_another_port_of_the_gateway(
    monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    monkeypatch.setenv(other, "9100")
    monkeypatch.setenv("GRPC_PORT", "9100")
    with pytest.raises(ConfigError, match="GRPC_PORT must differ from PORT and METRICS_PORT"):
        load_settings(_env_file=None)


def test_workers_zero_means_one_per_core_and_threads_default_to_each_workers_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("inference_gateway.config.usable_cores", lambda: 2)
    # `serve` starts one per core and passes the count on to each worker ...
    assert make_settings(workers=0).effective_workers == 2
    worker = make_settings(workers=2)
    assert (worker.effective_model_threads, worker.effective_preprocess_workers) == (1, 0)
    assert make_settings(workers=2, preprocess_workers=1).effective_preprocess_workers == 1
    # ... while an app run without `serve` (WORKERS still 0) is one process: all cores.
    alone = make_settings(workers=0)
    assert (alone.effective_model_threads, alone.effective_preprocess_workers) == (2, 2)
    one = make_settings(workers=1)
    assert (one.effective_workers, one.effective_model_threads) == (1, 2)
    monkeypatch.setattr("inference_gateway.config.usable_cores", lambda: 16)
    assert make_settings(workers=0).effective_workers == 4  # at most 4 workers
    big = make_settings(workers=4)
    assert (big.effective_model_threads, big.effective_preprocess_workers) == (4, 4)
    assert make_settings(model_threads=3, preprocess_workers=5).effective_model_threads == 3


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        (None, 2),  # no cgroup v2 file: the affinity mask
        ("max 100000\n", 2),  # no quota
        ("150000 100000\n", 2),  # --cpus 1.5: rounded up
        ("100000 100000\n", 1),  # --cpus 1 on a bigger machine: one worker, one thread
        ("800000 100000\n", 2),  # a quota above the cpuset: the cpuset
        ("garbage", 2),
    ],
)
def test_usable_cores_honours_a_cgroup_cpu_quota(
    cpu_max: str | None, expected: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cores(path) == expected


@pytest.mark.parametrize("token", ["short-secret", "fifteen-chars!!"])
def test_an_invalid_secret_setting_is_named_never_echoed(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert "ADMIN_TOKEN" in message and "characters" in message
    assert token not in message and token[:8] not in message
    assert str(len(token)) not in message  # not even its length


def test_every_secret_setting_is_known_as_one() -> None:
    assert "admin_token" in config.SECRET_SETTINGS
