"""Tail sampling in process: keep the traces that matter, decided when the answer is known.

Head sampling decides at a request's first span, before anything is known, and so
throws away most of the failed and slow requests with the healthy ones. Here every
request gets its ids (trace and span ids, in the logs and headers as always) but its
spans are only *recorded*: a `RecordedSpan` is a name, two clock readings, a dict of
attributes and its parent, nothing more: no SDK span, no processor call, no lock.
When the request is answered `TailSampling.decide` keeps it when it failed (5xx), was
refused (503) or timed out (504), took longer than ``slow_seconds``, or arrived with a
sampled ``traceparent``, and otherwise with probability ``ratio``. Only a
kept request's records become spans (the SDK's `ReadableSpan`, with the recorded times,
ids, parents, attributes, events, links and status) and go to the exporting
processors; a dropped request's records are forgotten. A batch's span (a trace of its
own, linked to its requests) is kept when any of its requests is.

With ``OTEL_TRACES_SAMPLER`` set, none of this runs: the SDK's standard head sampling
does (`golden_signals.instrument` decides).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import Attributes, AttributeValue

from golden_signals.ids import OwnIds


class Outcome(StrEnum):
    """What a request's answer was, as far as keeping its trace goes."""

    OK = "ok"  # answered, or the client's own mistake (4xx, a cancelled call)
    ERROR = "error"  # the server failed (5xx other than below)
    REFUSED = "refused"  # refused to protect the service, or not serving (503)
    TIMEOUT = "timeout"  # a deadline passed (504)


#: The outcomes as module constants for the per-request code: on Python 3.11 reading an
#: enum member from its class (``Outcome.OK``) costs about 60 ns, a global a few.
_OK, _ERROR, _REFUSED, _TIMEOUT = Outcome.OK, Outcome.ERROR, Outcome.REFUSED, Outcome.TIMEOUT

#: Why a trace was kept: the ``reason`` of ``traces_kept_total``, in the order checked.
KEEP_REASONS: tuple[str, ...] = (
    "error", "refused", "timeout", "slow", "low_confidence", "parent_sampled", "ratio",
)  # fmt: skip
#: Spans one request may hold while it waits for its decision; beyond, they are dropped.
#: (A batch request of 256 items that records about 4 spans per item stays below.)
MAX_SPANS_PER_TRACE = 1024
#: Spans of kept requests remembered for a batch span that starts after its request was
#: decided (a request that timed out just as its batch began).
KEPT_MEMORY = 4096
#: Running spans a batch span could be linked to; beyond, the oldest are forgotten (only
#: a span started and never ended stays, and such a span is a bug).
MAX_RUNNING_SPANS = 65536

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
#: The largest valid ids (W3C; OpenTelemetry's `SpanContext.is_valid`).
_MAX_TRACE_ID, _MAX_SPAN_ID = 2**128 - 1, 2**64 - 1
_UNSET = Status(StatusCode.UNSET)


def want_trace(reason: str) -> bool | None:
    """Ask tail sampling to keep the current request's trace for ``reason`` (one of
    `KEEP_REASONS`, such as ``low_confidence``), within its rate for such requests.

    True when the trace will be kept (asked for now or before, or already kept), False
    when it was refused (over the rate, or already dropped), None when the request is
    not recorded by tail sampling (head sampling decides).
    """
    span = trace.get_current_span()
    if not isinstance(span, RecordedSpan):
        return None
    root = span.root
    if root.kept is not None:
        return root.kept
    if root.wanted is None:
        if not span._owner.allow_wanted():
            return False
        root.wanted = reason
    return True


def http_outcome(status: int) -> Outcome:
    """The outcome of an HTTP answer with ``status``."""
    if status < 500:
        return _OK
    if status == 503:
        return _REFUSED
    return _TIMEOUT if status == 504 else _ERROR


def parent_sampled(traceparent: str | None) -> bool:
    """Whether a W3C ``traceparent`` header asks for its trace to be sampled."""
    if traceparent is None:
        return False
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[3]) != 2:
        return False
    try:
        return bool(int(parts[3], 16) & 0x01)
    except ValueError:
        return False


class RecordedSpan(trace.Span):
    """A span as tail sampling records it: what a span holds, kept in plain fields.

    It has real ids (its trace's, from the parent or new) and is made current like any
    span, so logs, headers and child spans see it; it becomes an SDK span only if its
    request is kept (`TailSampling`). Each request's local root (its server span) holds
    the finished spans of its request until the decision.
    """

    __slots__ = ("_attributes", "_context", "_end", "_events", "_hex", "_id", "_indexed",
                 "_kind", "_links", "_name", "_on_exception", "_owner", "_parent", "_request",
                 "_start", "_state", "_status", "_trace_id", "batches", "begun", "finished", "kept",
                 "linked", "wanted")  # fmt: skip

    def __init__(
        self,
        owner: TailSampling,
        name: str,
        ids: tuple[int, int, TraceState | None],
        parent: SpanContext | RecordedSpan | None,
        root: RecordedSpan | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link],
        start_time: int | None,
        on_exception: tuple[bool, bool] = (True, True),
    ) -> None:
        """Record a span that starts now (or at ``start_time``) with ``ids`` (trace id,
        span id, trace state), a child of ``parent`` (a local parent's record, or a
        remote one's context), under ``root`` (None: it is a root itself);
        ``on_exception``: whether leaving it as a context manager by an exception
        records the exception, and sets status ERROR, as the SDK's."""
        self._owner = owner
        self._name = name
        self._trace_id, self._id, self._state = ids
        # Its SpanContext, made when something asks for it (`get_span_context`): most
        # records are dropped without anyone reading it.
        self._context: SpanContext | None = None
        self._hex: tuple[str, str, int] | None = None  # `hex_ids`, made when first asked
        self._indexed = False  # in the owner's index of running spans a link may name
        self._parent = parent
        # None for a root itself: a reference to itself would make every request's
        # records a reference cycle, garbage only the cyclic collector frees.
        self._request = root
        self._kind = kind
        self._attributes: dict[str, AttributeValue] = dict(attributes) if attributes else {}
        self._links = tuple(links)
        self._events: list[tuple[str, Attributes, int]] | None = None
        self._status = _UNSET
        self._start = start_time if start_time is not None else time.time_ns()
        self._end: int | None = None
        self._on_exception = on_exception
        if root is None:
            # A root's state (only a root has it: the code reads it through `root`):
            # its request's finished spans until the decision, the decision, the batch
            # spans waiting on it; a batch span's requests (the roots it links to).
            self.finished: list[RecordedSpan] = []
            self.kept: bool | None = None
            # Why the request itself asked for its trace (`want_trace`), if it did.
            self.wanted: str | None = None
            self.batches: list[_BatchWait] = []
            self.linked: tuple[RecordedSpan, ...] = ()
            # Its answer began undecided (`TailSampling.decide`'s ``final`` False): the
            # ruling at its end keeps it only for what the end alone shows.
            self.begun = False

    @property
    def context(self) -> SpanContext:
        """The span's ids (`get_span_context`)."""
        return self.get_span_context()

    @property
    def parent(self) -> SpanContext | None:
        """The parent span's ids (None for the first span of a trace)."""
        parent = self._parent
        return parent.context if isinstance(parent, RecordedSpan) else parent

    @property
    def root(self) -> RecordedSpan:
        """The local root this span belongs to: its request's server span."""
        return self._request or self

    # --- the Span API -------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        """The span's ids as OpenTelemetry's `SpanContext` (made once, when asked for)."""
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self._trace_id, self._id, False, _SAMPLED, self._state
            )
            if self._end is None and not self._indexed:  # its ids are out: linkable now
                self._owner._linkable(self)
        return context

    def hex_ids(self) -> tuple[str, str, int] | None:
        """Its trace id and span id as W3C writes them (32 and 16 hex digits) and its
        trace flags (sampled, until decided), formatted once (`ids_text`). None when its
        ids are invalid (an id generator's zero), as its `SpanContext` would say. Ids
        read this way can name it in a link (a ``traceparent`` handed to a consumer
        elsewhere in the process), so it is indexed as when its context is made."""
        ids = self.ids_text()
        if ids is not None and self._end is None and not self._indexed:
            self._owner._linkable(self)
        return ids

    def ids_text(self) -> tuple[str, str, int] | None:
        """`hex_ids` for text that leaves the process (the answer's ``traceparent``, an
        access line, an exemplar): the span is not indexed for links, which only ids
        read in the process can make (the middleware's reads of a request's server
        span, every request, then cost the index nothing)."""
        ids = self._hex
        if ids is None:
            if not (0 < self._trace_id <= _MAX_TRACE_ID and 0 < self._id <= _MAX_SPAN_ID):
                return None
            trace_id, span_id = self._trace_id.to_bytes(16, "big"), self._id.to_bytes(8, "big")
            ids = self._hex = (trace_id.hex(), span_id.hex(), 1)
        return ids

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self._end is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes."""
        if self._end is None:
            self._attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""
        if self._end is None:
            self._attributes[key] = value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Add an event (now, or at ``timestamp``)."""
        if self._end is None:
            if self._events is None:
                self._events = []
            self._events.append((name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Add a link to ``context``."""
        if self._end is None and context.is_valid:
            self._links += (Link(context, attributes),)

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status as the SDK does: OK is final, UNSET is ignored."""
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record ``exception`` as an ``exception`` event, as the SDK does."""
        kind = type(exception)
        module = kind.__module__
        fields: dict[str, AttributeValue] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            fields.update(attributes)
        self.add_event("exception", fields, timestamp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """End the span; an exception leaving the block is recorded (status ERROR),
        as the SDK's span does unless told not to."""
        if exc_val is not None and self._end is None:
            record, set_status = self._on_exception
            if record:
                self.record_exception(exc_val, escaped=True)
            if set_status:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        """End the span (now, or at ``end_time``): it waits for its request's decision."""
        if self._end is None:
            self._end = end_time if end_time is not None else time.time_ns()
            self._owner._ended(self)

    # --- for the decision ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """The span's name."""
        return self._name

    @property
    def duration_seconds(self) -> float:
        """From start to end (to now while it runs)."""
        end = self._end if self._end is not None else time.time_ns()
        return (end - self._start) / 1e9

    def readable(
        self, resource: Resource, scope: InstrumentationScope, limits: SpanLimits
    ) -> ReadableSpan:
        """The finished SDK span this record stands for, bounded by the SDK's limits."""
        events: Sequence[Event] = ()
        if self._events:
            bounded: BoundedList[Event] = BoundedList(limits.max_events)
            for name, fields, timestamp in self._events:
                bounded.append(
                    Event(
                        name,
                        BoundedAttributes(
                            limits.max_event_attributes,
                            fields,
                            max_value_len=limits.max_attribute_length,
                        ),
                        timestamp,
                    )
                )
            events = bounded
        # A copy: a thread that set one as the record ended must not change the span.
        copied = dict(self._attributes)
        attributes: Attributes = copied
        if not _within(copied, limits):
            attributes = BoundedAttributes(
                limits.max_span_attributes, copied, max_value_len=limits.max_span_attribute_length
            )
        return ReadableSpan(
            name=self._name,
            context=self.context,
            parent=self.parent,
            resource=resource,
            attributes=attributes,
            events=events,
            links=BoundedList.from_seq(limits.max_links, self._links) if self._links else (),
            kind=self._kind,
            status=self._status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=scope,
        )


#: Attribute values the SDK's `BoundedAttributes` keeps as they are (strings, when no
#: length limit applies).
_PLAIN_VALUES = frozenset({str, bool, int, float})


def _within(attributes: dict[str, AttributeValue], limits: SpanLimits) -> bool:
    """Whether ``attributes`` are what the SDK's `BoundedAttributes` would make of them
    under ``limits`` (few enough, names that are non-empty text, plain values, no length limit),
    so that a kept span can carry them as they are: bounding them is a third of what
    turning a record into a span costs."""
    return (
        (limits.max_span_attributes is None or len(attributes) <= limits.max_span_attributes)
        and limits.max_span_attribute_length is None
        and all(type(key) is str and key for key in attributes)
        and all(type(value) in _PLAIN_VALUES for value in attributes.values())
    )


class RecordingTracer(trace.Tracer):
    """The tracer under tail sampling: its spans are `RecordedSpan` records."""

    def __init__(self, owner: TailSampling, ids: IdGenerator) -> None:
        """Record for ``owner``, with ids from ``ids``."""
        self._owner = owner
        self._ids = ids

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> RecordedSpan:
        """Record a span, a child of ``context``'s span (default: the current one)."""
        parent_span = trace.get_current_span(context)
        on_exception = (record_exception, set_status_on_exception)
        if not isinstance(parent_span, RecordedSpan):  # a remote parent, another's, or none
            return self.start_root_span(
                name, parent_span.get_span_context(), kind, attributes, links or (),
                start_time, on_exception,
            )  # fmt: skip
        # A local parent: its ids as they are, its request's root as the span's.
        return RecordedSpan(
            self._owner, name,
            (parent_span._trace_id, self._ids.generate_span_id(), parent_span._state),
            parent_span, parent_span._request or parent_span, kind, attributes, links or (),
            start_time, on_exception,
        )  # fmt: skip

    def start_root_span(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        on_exception: tuple[bool, bool] = (True, True),
    ) -> RecordedSpan:
        """A local root: a child of the span ``parent`` (a remote one's ids) when it is
        valid, else the first span of a new trace; never a child of the current span
        (a request's server span, with nothing to look up in the context, or what
        `start_span` records without a local parent)."""
        ids = self._ids
        if parent is not None and parent.is_valid:
            trace_id, state = parent.trace_id, parent.trace_state
        else:  # a new trace
            trace_id, state, parent = ids.generate_trace_id(), None, None
        span = RecordedSpan(
            self._owner, name, (trace_id, ids.generate_span_id(), state), parent, None, kind,
            attributes, links, start_time, on_exception,
        )  # fmt: skip
        if parent is None and span._links:  # a batch: note the requests it serves
            self._owner._link_batch(span)
        return span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """`start_span`, made current for the block."""
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


@dataclass(slots=True)
class _BatchWait:
    """A batch span waiting for its requests' decisions: kept when any is kept."""

    span: RecordedSpan
    undecided: int
    done: bool = False


class TokenBucket:
    """``rate`` takes a second, up to ``rate`` (at least one) at once."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def take(self) -> bool:
        """Whether a token was left (and is now taken)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class TailSampling(SpanProcessor):
    """Records every request's spans (`tracer`) and keeps a request's when its answer
    says so (`decide`); kept spans go to ``downstream``, the exporting processors.

    It is also the provider's span processor, so that shutting the provider down or
    flushing it reaches ``downstream``; spans made with the provider's own tracer (not
    `tracer`) pass straight through.
    """

    def __init__(
        self,
        downstream: Sequence[SpanProcessor],
        *,
        ratio: float,
        slow_seconds: float,
        refused_per_second: float = 0.0,
        wanted_per_second: float = 0.0,
        resource: Resource | None = None,
        on_kept: Callable[[str], None] | None = None,
        ids: IdGenerator | None = None,
        scope_name: str = "golden_signals",
    ) -> None:
        """Keep healthy, fast requests with probability ``ratio``, and every one slower
        than ``slow_seconds``; refused ones at most ``refused_per_second`` a second (0:
        all); those that asked (`want_trace`) at most ``wanted_per_second`` (0: all);
        ``on_kept`` counts each kept request by reason; ``scope_name`` names the
        instrumentation scope of the spans it exports."""
        self.ratio = ratio
        self.slow_seconds = slow_seconds
        self.refusals = TokenBucket(refused_per_second) if refused_per_second > 0 else None
        self.wanted = TokenBucket(wanted_per_second) if wanted_per_second > 0 else None
        self.on_kept = on_kept
        self.random: Callable[[], float] = random.random
        self.tracer = RecordingTracer(self, ids if ids is not None else OwnIds())
        self._downstream = tuple(downstream)
        self._resource = resource if resource is not None else Resource.create({})
        self._scope = InstrumentationScope(scope_name)
        self._limits = SpanLimits()
        self._lock = threading.Lock()
        # Running spans whose ids were read, by span id, each to its request's root: a
        # batch span links to its requests' spans by id and finds their requests here.
        self._running: dict[int, RecordedSpan] = {}
        self._kept_spans: OrderedDict[int, RecordedSpan] = OrderedDict()  # under _lock

    # --- the rule -----------------------------------------------------------------------
    def reason(
        self,
        outcome: Outcome,
        duration_seconds: float,
        sampled_parent: bool,
        wanted: str | None = None,
    ) -> str | None:
        """Why the trace is kept, or None to drop it (``wanted``: the reason the request
        asked for it with `want_trace`, such as ``low_confidence``)."""
        if outcome is not _OK and (
            outcome is not _REFUSED or self.refusals is None or self.refusals.take()
        ):  # (a refusal over its rate is one of many alike: judged as a healthy one)
            return outcome.value
        if duration_seconds > self.slow_seconds:
            return "slow"
        # A healthy, fast request: asked for (``wanted``, granted within
        # ``wanted_per_second`` by `want_trace`), a sampled parent, or the ratio.
        if wanted is not None:
            return wanted
        if sampled_parent:
            return "parent_sampled"
        return "ratio" if self.ratio > 0 and self.random() < self.ratio else None

    def allow_wanted(self) -> bool:
        """Whether one more request may have its trace kept because it asked
        (`want_trace`): at most ``wanted_per_second``."""
        return self.wanted is None or self.wanted.take()

    def decide(
        self,
        server_span: trace.Span,
        outcome: Outcome,
        duration_seconds: float,
        traceparent: str | None,
        sampled_parent: bool = False,
        *,
        final: bool = True,
    ) -> bool | None:
        """Decide now on the request whose server span (its local root) is
        ``server_span``, which arrived with ``traceparent`` (or whose parent was sampled,
        ``sampled_parent``): export or forget its spans, count a keep, and return whether
        it was kept (None for an untraced request). A request kept stays kept.

        ``final`` False: a ruling for an answer that has only begun (its status line, whose
        ``traceparent`` says it): kept now when the rule says so, else False and nothing
        forgotten; its ruling when it ends may still keep it, only for what its end alone
        can show (`_after_begun`: it failed or ran slow after, as a stream can, or it asked
        with `want_trace` meanwhile), never for a second draw of the ratio."""
        if not isinstance(server_span, RecordedSpan):
            return None
        root = server_span._request or server_span
        if root.kept is not None:
            return root.kept
        if root.begun:
            why = self._after_begun(outcome, duration_seconds, root.wanted)
        else:
            if traceparent is not None and not sampled_parent:
                sampled_parent = parent_sampled(traceparent)
            why = self.reason(outcome, duration_seconds, sampled_parent, root.wanted)
        if why is None and not final:
            root.begun = True
            return False
        self._settle(root, why is not None)
        if why is None:
            return False
        if self.on_kept is not None:
            self.on_kept(why)
        return True

    def _after_begun(
        self, outcome: Outcome, duration_seconds: float, wanted: str | None
    ) -> str | None:
        """Why a request its answer's beginning did not keep is kept at its end, or None:
        it failed (a refusal is not new: its status was the beginning's) or ran slow
        since, or it asked (`want_trace`)."""
        if outcome is _ERROR or outcome is _TIMEOUT:
            return outcome.value
        if duration_seconds > self.slow_seconds:
            return "slow"
        return wanted

    # --- the records --------------------------------------------------------------------
    def _linkable(self, span: RecordedSpan) -> None:
        """Index running ``span`` by its id, just read (`get_span_context`, `hex_ids`):
        only a span whose ids were read can be the target of a link."""
        running = self._running
        if len(running) >= MAX_RUNNING_SPANS:
            with contextlib.suppress(RuntimeError, StopIteration):  # changed meanwhile
                running.pop(next(iter(running)), None)
        running[span._id] = span._request or span
        span._indexed = True
        if span._end is not None:  # it ended meanwhile in another thread: `_ended` ran
            running.pop(span._id, None)

    def _link_batch(self, span: RecordedSpan) -> None:
        """Note the requests a batch ``span`` (a root with links) serves, found by the
        ids of the spans it links to."""
        running = self._running
        with self._lock:
            span.linked = tuple(
                root
                for root in (
                    running.get(link.context.span_id) or self._kept_spans.get(link.context.span_id)
                    for link in span._links
                )
                if root is not None
            )

    def _ended(self, span: RecordedSpan) -> None:
        """Hold ``span`` for its request's decision, or act on the decision made."""
        if span._indexed:  # (`_linkable`)
            self._running.pop(span._id, None)
        root = span._request
        if root is None:
            root = span
            if root.kept:  # decided before its end (a request's server span): kept
                self._export([span])
            elif root.kept is None:
                if root.linked or root._links:
                    self._end_batch(span)
                else:  # a root nobody decided on (not a request): judged as it ends
                    parent = root.parent
                    sampled = parent is not None and parent.trace_flags.sampled
                    self.decide(root, _OK, root.duration_seconds, None, sampled)
            return
        with self._lock:
            kept = root.kept
            if kept is None:
                if len(root.finished) < MAX_SPANS_PER_TRACE:
                    root.finished.append(span)
                return
        if kept:
            self._export([span])

    def _end_batch(self, span: RecordedSpan) -> None:
        """A batch span: kept now when a request is kept, dropped when all are dropped,
        else left on each undecided request to be kept by the first one kept."""
        with self._lock:
            if not any(root.kept for root in span.linked):
                undecided = [root for root in span.linked if root.kept is None]
                if undecided:
                    wait = _BatchWait(span, len(undecided))
                    for root in undecided:
                        root.batches.append(wait)
                return
        self._export([span])

    def _settle(self, root: RecordedSpan, keep: bool) -> None:
        """Rule on ``root``'s request: export its finished spans (and the batch spans
        that wait on it) when kept, forget them otherwise."""
        with self._lock:
            root.kept = keep  # nothing is added to its lists once this is set
            finished, batches = root.finished, root.batches
            if not finished and not batches and (not keep or root._end is None):
                return  # nothing waits on the ruling (a request's, before its span ends)
            kept: list[RecordedSpan] = []
            if finished:
                root.finished = []
            if batches:
                root.batches = []
            if keep:
                kept += finished
                if root._end is not None:
                    kept.append(root)
                for span in finished:
                    self._kept_spans[span._id] = root
                while len(self._kept_spans) > KEPT_MEMORY:
                    self._kept_spans.popitem(last=False)
            for wait in batches:
                wait.undecided -= 1
                if not wait.done and keep:
                    wait.done = True
                    kept.append(wait.span)
                elif wait.undecided == 0:
                    wait.done = True
        if kept:
            self._export(kept)

    def _export(self, spans: list[RecordedSpan]) -> None:
        for span in spans:
            readable = span.readable(self._resource, self._scope, self._limits)
            for processor in self._downstream:
                processor.on_end(readable)

    # --- the provider's side ------------------------------------------------------------
    def on_end(self, span: ReadableSpan) -> None:
        """A span made by the provider's own tracer: passed on as it is."""
        for processor in self._downstream:
            processor.on_end(span)

    def shutdown(self) -> None:
        """Shut the downstream processors down (what still waits is dropped)."""
        for processor in self._downstream:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the downstream processors."""
        return all(p.force_flush(timeout_millis) for p in self._downstream)
