"""Settings: every knob of the gateway, its environment variable and its default.

Each field's environment variable is its name in upper case (``port`` → ``PORT``);
values also come from a ``.env`` file in the working directory. Defaults serve a
laptop. Standard ``OTEL_*`` variables are read by the OpenTelemetry SDK itself and keep
their meaning there; they are not duplicated here.
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from golden_signals.tracing import head_sampler
from inference_gateway import __version__

MIB = 1024 * 1024
#: File descriptors a worker keeps for itself beyond its connections: model files, the
#: exporter's and the metrics' sockets, logs, the multiprocess files.
FD_RESERVE = 128
#: What ``GRPC_PORT`` needs (the ``grpc`` extra): grpcio, and the service definition and
#: protobuf messages that tritonclient ships.
GRPC_PACKAGES: tuple[str, ...] = ("grpc", "tritonclient", "google.protobuf")
#: The most worker processes ``WORKERS=0`` starts (each holds its own copy of the model).
MAX_AUTO_WORKERS = 4


#: cgroup v2's CPU limit of this process's container (``max`` or ``<quota> <period>``).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPU cores this process may use: its affinity mask (a container's cpuset), capped
    by a cgroup v2 CPU quota (``docker run --cpus``, a Kubernetes CPU limit), rounded up.
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return cores
        return max(min(cores, math.ceil(int(quota) / int(period))), 1)
    except (OSError, ValueError, ZeroDivisionError):
        return cores  # no readable cgroup v2 limit here


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (only its parents)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


DEFAULT_MODEL_CACHE_DIR = Path.home() / ".cache" / "inference-gateway"


class Environment(StrEnum):
    """Where the service runs; decides defaults such as the log format."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    """How log records are rendered on stdout."""

    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """Standard logging levels accepted by ``LOG_LEVEL``."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class Backend(StrEnum):
    """Which runtime executes the forward pass."""

    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


class Device(StrEnum):
    """Where the torch backend runs the model."""

    CPU = "cpu"
    CUDA = "cuda"


class ConfigError(ValueError):
    """A setting is invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """All configuration of one gateway process, validated at start."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
    )

    # --- app
    app_name: str = Field("inference-gateway", min_length=1, max_length=64)
    app_version: str = Field(__version__, min_length=1, max_length=64)
    environment: Environment = Environment.DEVELOPMENT

    # --- server
    host: str = "127.0.0.1"
    # 0: a port the system picks, which uvicorn's start-up line reports.
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(0, ge=0, le=64)  # 0: one per usable core, at most MAX_AUTO_WORKERS
    graceful_shutdown_seconds: float = Field(30.0, gt=0, le=600)
    # After SIGTERM: /ready answers 503 and new predictions are refused (503 draining)
    # for this long before the listener closes, so load balancers stop routing first.
    shutdown_delay_seconds: float = Field(0.0, ge=0, le=300)
    # Slow clients: a request's headers, and then its body, must arrive within these.
    request_header_timeout: float = Field(10.0, gt=0, le=600)
    # The request line and all headers together, and the number of headers: beyond
    # either, 431 and the connection is closed (under `inference-gateway serve`).
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_header_count: int = Field(100, ge=8, le=10_000)
    # Open HTTP connections per worker; beyond, a new one gets 503. 0: from the
    # file-descriptor limit (RLIMIT_NOFILE less a reserve for files and the exporter).
    max_connections: int = Field(0, ge=0, le=1_000_000)
    request_body_timeout: float = Field(30.0, gt=0, le=3600)
    # The Open Inference Protocol's gRPC service on this port (bound to HOST); unset: off.
    grpc_port: int | None = Field(None, ge=1, le=65535)
    # gRPC calls one worker serves at once, health probes aside (they always have room);
    # beyond, RESOURCE_EXHAUSTED. 0: MAX_QUEUE_SIZE + MAX_BATCH_SIZE (what admission
    # could take in anyway).
    grpc_max_calls: int = Field(0, ge=0, le=100_000)
    # Unset: the model repository extension (load, unload, index) is off. Set: those
    # calls need "Authorization: Bearer <token>". Never logged or shown.
    admin_token: SecretStr | None = Field(None, min_length=16)
    # Unset: no key needed. Set: a file of "key-id:sha256-hex" lines; predictions, the
    # Open Inference Protocol and the page need one of its keys (`keys add` writes one).
    api_keys_file: Path | None = None

    # --- logging
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat | None = None  # None: json, except console in development
    # UNSAFE, for debugging only: tracebacks in log lines carry each frame's local
    # variables, which hold request headers (API keys, the admin token) and payloads.
    log_traceback_locals: bool = False

    # --- model
    # A directory of models to serve (model.yaml or Hugging Face configs, labels,
    # numbered versions of model.onnx); unset: the built-in model.
    model_repository: Path | None = None
    # Rescan the repository this often (seconds) and apply what changed; 0: never.
    model_repository_poll_seconds: float = Field(0.0, ge=0, le=86_400)
    # The model that answers POST /predict; unset: the built-in, or the only model.
    default_model: str | None = Field(None, min_length=1, max_length=64)
    model_name: str = Field("efficientnet-lite0", min_length=1, max_length=64)
    model_version: str = Field("1", min_length=1, max_length=32)
    model_backend: Backend = Backend.ONNXRUNTIME
    model_device: Device = Device.CPU
    model_warmup: bool = True
    model_threads: int = Field(0, ge=0, le=256)  # 0: this worker's share of the cores
    # With several workers: a forward pass that finds no other running on the machine
    # runs on every usable core (a second ONNX Runtime session per model and worker).
    model_wide_when_idle: bool = True
    model_cache_dir: Path = DEFAULT_MODEL_CACHE_DIR  # exported ONNX files
    top_k_default: int = Field(5, ge=1, le=20)

    # --- limits
    max_body_bytes: int = Field(10 * MIB, ge=1024, le=1024 * MIB)
    max_image_pixels: int = Field(40_000_000, ge=1, le=500_000_000)
    max_image_side: int = Field(16_384, ge=1, le=65_535)
    max_multipart_fields: int = Field(16, ge=1, le=1000)
    # Images (or preprocessed tensors) one Open Inference Protocol request may carry.
    max_images_per_request: int = Field(32, ge=1, le=1024)

    # --- performance
    # 0: this worker's share of the cores, or decoding on the event loop when that is one
    preprocess_workers: int = Field(0, ge=0, le=64)
    max_queue_size: int = Field(64, ge=1, le=100_000)
    # Refuse (503 queue_full) a request the model would answer later than this: the
    # batches ahead of it and its own, at the measured batch time. Unset: half the latency
    # objective (SLO_LATENCY_P99_SECONDS), so what is admitted under overload is still
    # answered within it; 0: off (only MAX_QUEUE_SIZE and the deadline bound the queue).
    max_queue_wait_ms: float | None = Field(None, ge=0, le=600_000)
    max_batch_size: int = Field(4, ge=1, le=256)
    max_batch_delay_ms: float = Field(0.0, ge=0, le=1000)
    max_inflight_bytes: int = Field(64 * MIB, ge=1024, le=16 * 1024 * MIB)
    request_timeout: float = Field(10.0, gt=0, le=600)
    # /ready turns 503 while one forward pass has been running longer than this.
    model_stall_seconds: float = Field(10.0, gt=0, le=3600)
    # A model that fails to load is tried again after this, doubling up to the maximum.
    model_load_retry_seconds: float = Field(1.0, gt=0, le=3600)
    model_load_retry_max_seconds: float = Field(60.0, gt=0, le=3600)

    # --- observability
    enable_metrics: bool = True
    enable_tracing: bool = True
    enable_docs: bool = True
    # The page for people at / (static assets under /ui/).
    enable_ui: bool = True
    # Where the page links a trace id: "{trace_id}" is replaced (e.g. Jaeger's
    # http://localhost:16686/trace/{trace_id}); unset: no link.
    trace_ui_url: str | None = None
    # Serve /metrics on its own port (and not on PORT), for a private scrape network.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # Read, not redefined: these keep their standard meaning. An OTLP exporter is
    # attached only when an endpoint is set; the SDK reads the rest of OTEL_* itself.
    trace_flush_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # Tail sampling (unless OTEL_TRACES_SAMPLER is set): failed, timed-out and slow
    # requests are always kept, refused ones up to TRACE_REFUSED_PER_SECOND; the
    # healthy, fast ones with this probability.
    trace_sample_ratio: float = Field(0.01, ge=0, le=1)
    # Slower than this is kept; unset: the latency objective (SLO_LATENCY_P99_SECONDS).
    trace_slow_ms: float | None = Field(None, gt=0)
    # Refused requests (503: shed load, draining) whose traces are kept, at most this
    # many a second per worker (a burst of as many at once); the others are kept only by
    # the other rules (slow, parent sampled, ratio). Under overload every refusal looks
    # alike, and exporting each one spends the CPU the admitted requests need. 0: all.
    trace_refused_per_second: float = Field(10.0, ge=0, le=100_000)
    # Answers whose confidence is unusually low for their version's reference (reason
    # low_confidence) whose traces are kept, at most this many a second per worker: in
    # the very incident the quality alerts are about (a dark camera) nearly every answer
    # is one. 0: all.
    trace_low_confidence_per_second: float = Field(10.0, ge=0, le=100_000)
    # The SDK's standard variables: when OTEL_TRACES_SAMPLER is set, head sampling as the
    # SDK does it (the ratio-based samplers with OTEL_TRACES_SAMPLER_ARG) instead of tail
    # sampling, read here so that a .env file's values reach the SDK too.
    otel_traces_sampler: str | None = None
    otel_traces_sampler_arg: float = Field(1.0, ge=0, le=1)
    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    # Set by `inference-gateway serve --workers N` (or by you) for multiprocess metrics.
    prometheus_multiproc_dir: str | None = None
    # Set by `inference-gateway serve --workers N`: where workers record readiness.
    worker_state_dir: str | None = None

    # --- SLO targets (documentation and dashboards read the same numbers)
    slo_availability_target: float = Field(0.995, gt=0, lt=1)
    slo_latency_p99_seconds: float = Field(0.3, gt=0)
    slo_latency_p95_seconds: float = Field(0.2, gt=0)

    # --- CORS: closed unless origins are listed (comma-separated)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("otel_traces_sampler")
    @classmethod
    def _known_sampler(cls, value: str | None) -> str | None:
        if not value:
            return None
        head_sampler(value)  # the library's own check: a name the SDK knows
        return value.lower()

    @field_validator("grpc_port")
    @classmethod
    def _grpc_installed(cls, value: int | None) -> int | None:
        # Said at start, naming the variable, rather than at the first call.
        if value is not None:
            missing = [name for name in GRPC_PACKAGES if not _installed(name)]
            if missing:
                raise ValueError(
                    f"the gRPC service needs {', '.join(missing)}, not installed here: "
                    "pip install 'inference-gateway[grpc]'"
                )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_ports(self) -> Settings:
        if self.grpc_port is not None and self.grpc_port in (self.port, self.metrics_port):
            raise ValueError("GRPC_PORT must differ from PORT and METRICS_PORT")
        return self

    @model_validator(mode="after")
    def _check_latency_targets(self) -> Settings:
        if self.slo_latency_p95_seconds > self.slo_latency_p99_seconds:
            raise ValueError("SLO_LATENCY_P95_SECONDS must not exceed SLO_LATENCY_P99_SECONDS")
        return self

    @property
    def effective_max_connections(self) -> int:
        """``MAX_CONNECTIONS``, or the worker's file-descriptor limit less a reserve."""
        if self.max_connections:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 65536
        return max(16, soft - FD_RESERVE)

    @property
    def max_queue_wait_seconds(self) -> float:
        """``MAX_QUEUE_WAIT_MS`` in seconds (0: no bound), by default half the latency
        objective."""
        if self.max_queue_wait_ms is None:
            return self.slo_latency_p99_seconds / 2
        return self.max_queue_wait_ms / 1000

    @property
    def effective_grpc_max_calls(self) -> int:
        """``GRPC_MAX_CALLS``, or the calls admission could take in: the queue and a batch."""
        return self.grpc_max_calls or self.max_queue_size + self.max_batch_size

    @property
    def tail_sampling(self) -> bool:
        """Whether traces are tail-sampled (no ``OTEL_TRACES_SAMPLER`` asks otherwise)."""
        return not self.otel_traces_sampler

    @property
    def trace_slow_seconds(self) -> float:
        """Requests slower than this keep their trace: ``TRACE_SLOW_MS``, or the latency
        objective."""
        if self.trace_slow_ms is not None:
            return self.trace_slow_ms / 1000
        return self.slo_latency_p99_seconds

    @property
    def effective_workers(self) -> int:
        """``WORKERS``, or one per usable core (at most `MAX_AUTO_WORKERS`) when 0."""
        return self.workers or min(usable_cores(), MAX_AUTO_WORKERS)

    @property
    def core_share(self) -> int:
        """Cores per worker process (at least 1): the default for the thread counts.

        ``WORKERS=0`` counts as one process here: `serve` resolves it to a number
        before it starts its workers, so 0 means the app runs without `serve` (under
        plain uvicorn, in-process, in the ``predict`` command) as one process.
        """
        return max(usable_cores() // (self.workers or 1), 1)

    @property
    def effective_model_threads(self) -> int:
        """``MODEL_THREADS``, or this worker's share of the cores when 0."""
        return self.model_threads or self.core_share

    @property
    def effective_preprocess_workers(self) -> int:
        """``PREPROCESS_WORKERS``; when 0, this worker's share of the cores, or 0 (decode
        on the event loop, no pool) when that share is one core: a pool thread on the
        same core as the loop only adds two thread hand-offs per request."""
        if self.preprocess_workers:
            return self.preprocess_workers
        share = self.core_share
        return share if share > 1 else 0

    @property
    def effective_log_format(self) -> LogFormat:
        """The log format in force: explicit, or derived from the environment."""
        if self.log_format is not None:
            return self.log_format
        if self.environment is Environment.DEVELOPMENT:
            return LogFormat.CONSOLE
        return LogFormat.JSON


#: Settings whose values are secrets: a validation error names the rule, never the value.
SECRET_SETTINGS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)


def _secret_rule(err: ErrorDetails) -> str:
    """The rule a secret setting broke, without its value or its length."""
    context = err.get("ctx", {})
    if err["type"] == "too_short":
        return f"must be at least {context.get('min_length')} characters long"
    if err["type"] == "too_long":
        return f"must be at most {context.get('max_length')} characters long"
    return "is not valid"


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings` from the environment, turning validation errors into `ConfigError`.

    The message names each offending environment variable, e.g. ``PORT: Input should
    be less than or equal to 65535 (got '70000')``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
            if err["loc"] and err["loc"][0] in SECRET_SETTINGS:
                lines.append(f"{name}: {_secret_rule(err)} (the value is a secret: not shown)")
            else:
                lines.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
