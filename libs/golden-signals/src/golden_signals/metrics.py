"""Metrics kept in process, exact across workers, exposed through prometheus_client.

prometheus_client's multiprocess mode writes every increment to a memory-mapped file
under one process-wide lock (about 1.3 µs a counter increment and 2 µs a histogram
observation, two to three times that under load) and keeps no exemplars. Here a value
is a number in a dict of this process (a counter increment costs a dict lookup and an
addition), and each worker publishes a copy of its values, exemplars included, to its
own file in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's convention): every
`SignalRegistry.flush_interval` seconds, at exit, and on demand before a scrape.

A scrape is exact: the worker that answers it asks every other live worker to publish (a
reading of the system's monotonic clock, written to a file they read unless it already
holds a later one: a concurrent scrape's request answers it, and a byte written to each
worker's named pipe, where its publishing thread sleeps, wakes it), waits until each has
published at least that request (at most ``scrape_wait`` seconds), and sums their files
with its own values, so every request finished before the scrape is counted once. A
worker is its pid and its process's start time (a pid reused by a later process is
another worker, with a file of its own), and the files of different apps (``name``) in
one directory are never summed together. A worker that died keeps its counters and
histograms in the sum (its file stays: counters never go back) and loses its gauges
(``livesum``). A worker killed outright loses what it had not yet published (at most one
flush interval). Exemplars: the newest per bucket among the workers.

The families render through prometheus_client's own exposition (Prometheus text, or
OpenMetrics with exemplars when the scraper asks for it), with the app's own
prometheus_client metrics (the default registry, or its multiprocess files) beside.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from golden_signals.asgi import HTTP_METHODS, OTHER_METHOD
from golden_signals.wake import SUFFIX as WAKE_SUFFIX
from golden_signals.wake import WakePipe, poke, worker_pipes

#: Request latency buckets (seconds), Prometheus' defaults with 0.3 s and 0.2 s added
#: (the usual latency objectives need a bucket edge at their threshold).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip

#: The worker files' names: ``golden-signals-<app>-<pid>-<start>.json``, the start time
#: telling a later process that reuses a pid from the one that died (prometheus_client's
#: own files end in ``.db``; the two never mix).
_FILE_PREFIX = "golden-signals-"
_REQUEST_FILE = "golden-signals-publish-request"
#: Where a named pipe cannot be made (a file system without them, a platform without
#: ``mkfifo``): how often the worker looks for a scrape's request instead (a ``stat`` of
#: the request file), and so about how long a scrape waits for it.
REQUEST_CHECK_SECONDS = 0.05

Labels = tuple[str, ...]


class Family:
    """One metric family: its name, help, label names and values by label values."""

    kind = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        """A family with no series yet."""
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, Any] = {}

    def state(self) -> dict[str, Any]:
        """The values as JSON-ready data (`SignalRegistry.publish`)."""
        return {"values": [[list(k), v] for k, v in list(self.values.items())]}

    def remove(self, labels: Labels) -> None:
        """Drop the series ``labels`` in this process (label values an app retired,
        such as a model version taken out of service); a later write makes it anew.
        With several workers the others' values stay in the sum: filter at the scrape
        instead to hide a series everywhere."""
        self.values.pop(labels, None)


class _OneValue(Family):
    """A family whose series each hold one number."""

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        """Add ``amount`` to the series ``labels``."""
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def touch(self, labels: Labels = ()) -> None:
        """Create the series at 0 (an increment that creates a series is invisible to
        ``rate()``: alerts and ratios need their series from the start)."""
        self.values.setdefault(labels, 0.0)


class CounterFamily(_OneValue):
    """A counter: ``inc`` adds (≥ 0) to a series (created at 0 by `touch`)."""

    kind = "counter"


class GaugeFamily(_OneValue):
    """A gauge, summed over the live workers."""

    kind = "gauge"

    def dec(self, labels: Labels = (), amount: float = 1.0) -> None:
        """Subtract ``amount`` from the series ``labels``."""
        values = self.values
        values[labels] = values.get(labels, 0.0) - amount

    def set(self, labels: Labels, value: float) -> None:
        """Set the series ``labels`` to ``value``."""
        self.values[labels] = value


class _Child:
    """A gauge's series with prometheus_client's ``inc``/``dec`` (the middleware's
    ``active_requests``)."""

    __slots__ = ("_family", "_labels")

    def __init__(self, family: GaugeFamily, labels: Labels = ()) -> None:
        self._family = family
        self._labels = labels

    def inc(self, amount: float = 1.0) -> None:
        values = self._family.values  # the family's `inc`, one call fewer a request
        values[self._labels] = values.get(self._labels, 0.0) + amount

    def dec(self, amount: float = 1.0) -> None:
        values = self._family.values
        values[self._labels] = values.get(self._labels, 0.0) - amount


class HistogramFamily(Family):
    """A histogram: per series, the count in each bucket (not cumulative) and the sum;
    per bucket, the latest exemplar (a trace id, the value, when)."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        """A histogram with the upper bounds ``buckets`` (+Inf added)."""
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self.exemplars: dict[tuple[Labels, int], tuple[str, float, float]] = {}

    def observe(self, labels: Labels, value: float, trace_id: str | None = None) -> None:
        """Count ``value`` in its bucket; with ``trace_id``, make it that bucket's exemplar."""
        counts = self.values.get(labels)
        if counts is None:
            counts = self.values[labels] = [0.0] * (len(self.bounds) + 1)
        index = bisect.bisect_left(self.bounds, value)
        counts[index] += 1
        counts[-1] += value
        if trace_id is not None:
            self.exemplars[labels, index] = (trace_id, value, time.time())

    def touch(self, labels: Labels = ()) -> None:
        """Create the series empty."""
        self.values.setdefault(labels, [0.0] * (len(self.bounds) + 1))

    def remove(self, labels: Labels) -> None:
        """Drop the series ``labels`` and its exemplars in this process."""
        super().remove(labels)
        self.drop_exemplars(labels)

    def drop_exemplars(self, labels: Labels) -> None:
        """Drop the exemplars of the series ``labels`` in this process, keeping its
        values (with several workers, a series the scrape filters out: when it comes
        back, it comes without the examples of its earlier life)."""
        for key in [key for key in list(self.exemplars) if key[0] == labels]:
            self.exemplars.pop(key, None)

    def state(self) -> dict[str, Any]:
        """Values and exemplars as JSON-ready data."""
        state = super().state()
        state["exemplars"] = [
            [list(labels), index, *exemplar]
            for (labels, index), exemplar in list(self.exemplars.items())
        ]
        return state


_F = TypeVar("_F", bound=Family)


class SignalRegistry(Collector):
    """The metric families of one app (never process-global: two apps in one process
    never clash), published for the other workers when ``multiprocess_dir`` is set."""

    def __init__(
        self,
        multiprocess_dir: str | os.PathLike[str] | None = None,
        *,
        name: str = "app",
        flush_interval: float = 1.0,
        scrape_wait: float = 0.5,
        include: CollectorRegistry | None = REGISTRY,
    ) -> None:
        """Families in this process; ``include``: the app's own prometheus_client
        metrics, rendered beside (prometheus_client's multiprocess files for its default
        registry when ``multiprocess_dir`` is set); ``name`` tells the files of this app
        from other apps' in the same directory."""
        self.multiprocess_dir = Path(multiprocess_dir) if multiprocess_dir else None
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "app"
        self.flush_interval = flush_interval
        self.scrape_wait = scrape_wait
        self.include = include
        self.families: dict[str, Family] = {}
        self._lock = threading.Lock()  # one publisher at a time
        self._published_for = 0  # the newest publication request answered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: WakePipe | None = None  # this worker's named pipe, while it has one
        self._pid = 0  # the process `_worker` last saw, and its start time
        self._started_at: int | None = None

    # --- families ------------------------------------------------------------------------
    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> CounterFamily:
        """The counter ``name`` (``_total`` included), made on first ask."""
        return self._family(CounterFamily(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> GaugeFamily:
        """The gauge ``name``, made on first ask."""
        return self._family(GaugeFamily(name, documentation, labelnames))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> HistogramFamily:
        """The histogram ``name``, made on first ask."""
        return self._family(HistogramFamily(name, documentation, labelnames, buckets))

    def _family(self, family: _F) -> _F:
        existing = self.families.setdefault(family.name, family)
        if type(existing) is not type(family) or existing.labelnames != family.labelnames:
            raise ValueError(f"metric {family.name!r} exists with other type or labels")
        return existing

    # --- publication ---------------------------------------------------------------------
    def publish(self) -> None:
        """Write this worker's values to its file (replaced at once: a reader never sees
        half of it). A no-op with one process."""
        directory = self.multiprocess_dir
        if directory is None:
            return
        pid, started_at = self._worker()
        with self._lock:
            requested = _requested(directory)
            data = {
                "pid": pid,
                "start": started_at,
                "app": self.name,
                "answers": requested,
                "families": {
                    name: {"kind": family.kind, **family.state()}
                    for name, family in list(self.families.items())
                },
            }
            target = directory / f"{self._file_stem()}.json"
            partial = target.with_name(f".{target.name}.tmp")
            partial.write_bytes(orjson.dumps(data))
            os.replace(partial, target)
            self._published_for = requested

    def start(self) -> None:
        """Start publishing in the background (with several workers; idempotent, and
        started again in a forked child)."""
        directory = self.multiprocess_dir
        if directory is None:
            return
        self._worker()
        if self._thread is not None:
            return
        stop = self._stop = threading.Event()  # started again after a shutdown
        directory.mkdir(parents=True, exist_ok=True)
        # The pipe before the first publication: a scrape that finds the file finds
        # the pipe too (a byte written meanwhile wakes the thread's first sleep).
        self._wake = WakePipe.make(self._wake_path(directory))
        try:
            self.publish()
        except BaseException:  # no thread to own the pipe: closed here
            self._close_unowned_wake()
            raise
        self._thread = threading.Thread(
            target=self._publish_loop, args=(stop,), name="golden-signals-publish", daemon=True
        )
        self._thread.start()

    def _file_stem(self) -> str:
        """This worker's files' name without its suffix (`_worker` has run)."""
        return f"{_FILE_PREFIX}{self.name}-{self._pid}-{self._started_at or 0}"

    def _close_unowned_wake(self) -> None:
        """Close the pipe no publishing thread owns (its thread closes its own)."""
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()

    def _wake_path(self, directory: Path) -> Path:
        return directory / f"{self._file_stem()}{WAKE_SUFFIX}"

    def _worker(self) -> tuple[int, int | None]:
        """This process's pid and start time (read from ``/proc`` once per process). In a
        forked child: a new worker, with no publishing thread yet and a lock of its own
        (one held at the fork would stay held)."""
        pid = os.getpid()
        if self._pid != pid:
            if self._pid:  # forked from a process that used this registry
                self._thread = None
                self._wake = None  # the parent's pipe (`WakePipe.forget`)
                self._lock = threading.Lock()
            self._pid, self._started_at = pid, _start_time(pid)
        return self._pid, self._started_at

    def _publish_loop(self, stop: threading.Event) -> None:
        """Until ``stop``: publish every ``flush_interval`` and whenever a scrape asks.
        The thread sleeps in its named pipe (`wake.WakePipe`) until a scrape or `close`
        writes to it or a flush is due (a pipe removed meanwhile is made again at the
        next flush); without one it looks every `REQUEST_CHECK_SECONDS`. Either way the
        request file is checked with one ``stat`` (read only when replaced since)."""
        directory = self.multiprocess_dir
        if directory is None:
            return
        request_file = directory / _REQUEST_FILE
        seen: tuple[int, int, int, int] | None = None
        last = time.monotonic()
        wake = self._wake  # this thread's pipe (`start` made it)
        try:
            while not stop.is_set():
                if wake is None:
                    stop.wait(REQUEST_CHECK_SECONDS)
                else:
                    wake.wait(last + self.flush_interval - time.monotonic())
                if stop.is_set():
                    break
                now = time.monotonic()
                asked = False
                with contextlib.suppress(OSError):
                    stat = os.stat(request_file)
                    # A new request is a new file (renamed over the old one): another
                    # inode, or, were the inode reused, a later change time or length.
                    key = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
                    if key != seen:
                        seen = key
                        asked = _requested(directory) > self._published_for
                if asked or now - last >= self.flush_interval:
                    with contextlib.suppress(OSError):
                        self.publish()
                    last = now
                    if wake is not None and not wake.intact():
                        wake.close()
                        wake = self._wake = WakePipe.make(self._wake_path(directory))
        finally:
            if wake is not None:
                if self._wake is wake:  # not a later thread's (a `start` after a `close`)
                    self._wake = None
                wake.close()

    def close(self) -> None:
        """Stop publishing, after a last publication (at shutdown)."""
        self._worker()  # in a forked child, never the parent's thread or pipe
        self._stop.set()
        wake = self._wake
        if wake is not None:
            wake.wake()  # the thread sleeps in it
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        else:
            self._close_unowned_wake()
        with contextlib.suppress(OSError):
            self.publish()

    # --- exposition ----------------------------------------------------------------------
    def _others(self, directory: Path) -> list[dict[str, Any]]:
        """The other workers' published values, after asking every live one to publish
        and waiting (at most ``scrape_wait``) for it."""
        request_file = directory / _REQUEST_FILE
        request = time.monotonic_ns()  # one clock for every process of the machine
        partial = request_file.with_name(f".{request_file.name}.{os.getpid()}.tmp")
        if _requested(directory) < request:  # a later scrape's request answers this one
            with contextlib.suppress(OSError):
                partial.write_text(str(request))
                os.replace(partial, request_file)
        wake = self._wake  # read once: the publishing thread may drop it meanwhile
        own = wake.path if wake is not None else None
        for pipe in worker_pipes(directory, f"{_FILE_PREFIX}{self.name}-"):
            if pipe != own:
                poke(pipe)
        deadline = time.monotonic() + self.scrape_wait
        while True:
            found = []
            waiting = False
            for path in directory.glob(f"{_FILE_PREFIX}{self.name}-*.json"):
                try:
                    data = orjson.loads(path.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                pid = int(data.get("pid", 0))
                if pid == os.getpid() or data.get("app") != self.name:
                    continue
                data["live"] = _alive(pid, data.get("start"))
                waiting |= data["live"] and int(data.get("answers", 0)) < request
                found.append(data)
            if not waiting or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)

    def collect(self) -> Iterator[Metric]:
        """Every family, summed over the workers, then the included registry's metrics."""
        directory = self.multiprocess_dir
        others: list[dict[str, Any]] = []
        if directory is not None:
            # A worker's values published first: the files then hold at least what any
            # scrape reported, so a worker killed before its next publication takes back
            # nothing a scrape saw (a counter never goes down). A process that only reads
            # (a parent's metrics port) publishes nothing.
            if self._thread is not None:
                with contextlib.suppress(OSError):
                    self.publish()
            others = self._others(directory)
        for name, family in list(self.families.items()):
            states = [
                (worker["families"][name], worker["live"])
                for worker in others
                if name in worker["families"]
            ]
            yield _merged(family, states)
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.include is REGISTRY and directory is not None and shared:
            # prometheus_client's multiprocess mode: the app's metrics are in its files.
            source = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(source, path=shared)  # type: ignore[no-untyped-call]
            yield from source.collect()
        elif self.include is not None:
            yield from self.include.collect()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition: OpenMetrics (with exemplars) when ``accept`` asks for it, else
        Prometheus text; with its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self), content_type


def _requested(directory: Path) -> int:
    """The newest publication request of a scraping worker (0: none)."""
    try:
        return int((directory / _REQUEST_FILE).read_text() or 0)
    except (OSError, ValueError):
        return 0


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (a pid
    reused by a later process is not; signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _start_time(pid) in (started, None)


def _merged(family: Family, others: Iterable[tuple[dict[str, Any], bool]]) -> Metric:
    """``family``'s values plus the other workers' (gauges: the live ones only)."""
    values: dict[Labels, Any] = {
        k: list(v) if isinstance(v, list) else v for k, v in list(family.values.items())
    }
    exemplars = dict(getattr(family, "exemplars", {}))
    for state, live in others:
        if family.kind == "gauge" and not live:
            continue
        for labels, value in state.get("values", ()):
            key = tuple(labels)
            mine = values.get(key)
            if isinstance(value, list):
                values[key] = (
                    value if mine is None else [a + b for a, b in zip(mine, value, strict=True)]
                )
            else:
                values[key] = value + (mine or 0.0)
        for labels, index, trace_id, value, when in state.get("exemplars", ()):
            key2 = (tuple(labels), int(index))
            if key2 not in exemplars or exemplars[key2][2] < when:
                exemplars[key2] = (trace_id, value, when)
    return _family_metric(family, values, exemplars)


def _family_metric(
    family: Family,
    values: dict[Labels, Any],
    exemplars: dict[tuple[Labels, int], tuple[str, float, float]],
) -> Metric:
    """prometheus_client's family for ``values``."""
    labelnames = list(family.labelnames)
    if isinstance(family, HistogramFamily):
        histogram = HistogramMetricFamily(family.name, family.documentation, labels=labelnames)
        for labels, counts in sorted(values.items()):
            cumulative = 0.0
            buckets: list[Any] = []
            for index, bound in enumerate(family.bounds):
                cumulative += counts[index]
                exemplar = exemplars.get((labels, index))
                buckets.append(
                    (
                        floatToGoString(bound),  # type: ignore[no-untyped-call]
                        cumulative,
                        Exemplar({"trace_id": exemplar[0]}, exemplar[1], exemplar[2])
                        if exemplar is not None
                        else None,
                    )
                )
            histogram.add_metric(list(labels), buckets, counts[-1])
        return histogram
    if isinstance(family, CounterFamily):
        counter = CounterMetricFamily(
            family.name.removesuffix("_total"), family.documentation, labels=labelnames
        )
        for labels, value in sorted(values.items()):
            counter.add_metric(list(labels), value)
        return counter
    gauge = GaugeMetricFamily(family.name, family.documentation, labels=labelnames)
    for labels, value in sorted(values.items()):
        gauge.add_metric(list(labels), value)
    return gauge


class RequestRecorder(Protocol):
    """What the middleware records each request into: `HttpMetrics`, or an app's own."""

    @property
    def active_requests(self) -> Any:
        """Requests being served: a gauge with ``inc()`` and ``dec()``."""

    def record_request(
        self,
        method: str,
        endpoint: str,
        status: int,
        duration_seconds: float | None,
        trace_id: str | None = None,
        first_byte_seconds: float | None = None,
    ) -> None:
        """One finished request (``duration_seconds`` None: a WebSocket session, whose
        length is no latency)."""

    def record_error(self, endpoint: str, exception_type: str) -> None:
        """One request that failed with an exception."""


#: The ``method`` label's values (`HttpMetrics.record_request`): the standard methods,
#: and a WebSocket session's.
_METHOD_LABELS = HTTP_METHODS | {"WEBSOCKET"}


class HttpMetrics:
    """The HTTP golden signals of the specification, in ``registry``.

    ``http_requests_total{method,endpoint,status}`` (traffic, errors),
    ``http_request_duration_seconds{method,endpoint}`` (latency until the answer's last
    byte was handed to the server; background tasks after it not included),
    ``http_response_first_byte_seconds{method,endpoint}`` (until the status line: apart
    from the total for streamed answers), ``http_request_exceptions_total
    {endpoint,exception_type}``, ``active_requests`` (saturation).
    """

    def __init__(
        self,
        registry: SignalRegistry,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        *,
        first_byte: bool = True,
    ) -> None:
        """The families, in ``registry`` (``first_byte=False``: no time to first byte,
        for a service whose answers are single bodies)."""
        self.registry = registry
        self.requests = registry.counter(
            "http_requests_total", "HTTP requests by route template and status.",
            ("method", "endpoint", "status"),
        )  # fmt: skip
        self.duration = registry.histogram(
            "http_request_duration_seconds",
            "HTTP request latency until the answer's last byte (seconds).",
            ("method", "endpoint"), buckets,
        )  # fmt: skip
        self.first_byte = (
            registry.histogram(
                "http_response_first_byte_seconds",
                "HTTP time until the answer's status line (seconds).",
                ("method", "endpoint"), buckets,
            )
            if first_byte
            else None
        )  # fmt: skip
        self.exceptions = registry.counter(
            "http_request_exceptions_total", "Exceptions raised while serving requests.",
            ("endpoint", "exception_type"),
        )  # fmt: skip
        gauge = registry.gauge("active_requests", "HTTP requests being served now.")
        gauge.set((), 0.0)
        self.active_requests = _Child(gauge)
        self._statuses: dict[int, str] = {}
        self._routes: set[tuple[str, str]] = set()

    def record_request(
        self,
        method: str,
        endpoint: str,
        status: int,
        duration_seconds: float | None,
        trace_id: str | None = None,
        first_byte_seconds: float | None = None,
    ) -> None:
        """Count one finished request; observe its latency (``trace_id``: the exemplar;
        None: a WebSocket session, counted only). A ``method`` outside
        `asgi.HTTP_METHODS` (and ``WEBSOCKET``) is labelled `asgi.OTHER_METHOD`: a
        client's own text would add series without bound."""
        if method not in _METHOD_LABELS:
            method = OTHER_METHOD
        code = self._statuses.get(status)
        if code is None:
            code = self._statuses[status] = str(status)
        if (method, endpoint) not in self._routes and len(self._routes) < 10_000:
            # A 500 series from a route's first request on: its first error is then
            # an increase ``rate()`` sees, not a new series' starting value.
            self._routes.add((method, endpoint))
            self.requests.touch((method, endpoint, "500"))
        self.requests.inc((method, endpoint, code))
        if duration_seconds is None:
            return
        key = (method, endpoint)
        self.duration.observe(key, duration_seconds, trace_id)
        if first_byte_seconds is not None and self.first_byte is not None:
            self.first_byte.observe(key, first_byte_seconds)

    def record_error(self, endpoint: str, exception_type: str) -> None:
        """Count one exception raised while serving ``endpoint``."""
        self.exceptions.inc((endpoint, exception_type))
