"""Tail sampling in process: keep the traces that matter, decided when the answer is known.

Head sampling decides at a request's first span, before anything is known, and so
throws away most of the failed and slow requests with the healthy ones. Here every
request is traced as before, but its finished spans wait in `TailSamplingProcessor`
until the request is answered; `TailSampling.decide` then keeps the trace when the
request failed (5xx), was refused (503) or timed out (504), took longer than
``TRACE_SLOW_MS``, or arrived with a sampled ``traceparent`` — and otherwise with
probability ``TRACE_SAMPLE_RATIO``. A kept trace's spans go on to the exporters; the
others are dropped before they are encoded or sent. A batch's span (a trace of its
own, linked to its requests) is kept when any of its requests is.

With ``OTEL_TRACES_SAMPLER`` set, none of this runs: the SDK's standard head sampling
does (`create_app` decides).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor


class Outcome(StrEnum):
    """What a request's answer was, as far as keeping its trace goes."""

    OK = "ok"  # answered, or the client's own mistake (4xx, a cancelled call)
    ERROR = "error"  # the server failed (5xx other than below)
    REFUSED = "refused"  # refused to protect the service, or not serving (503)
    TIMEOUT = "timeout"  # a deadline passed (504)


#: Why a trace was kept: the ``reason`` of ``traces_kept_total``, in the order checked.
KEEP_REASONS: tuple[str, ...] = ("error", "refused", "timeout", "slow", "parent_sampled", "ratio")
#: Requests whose decision is remembered, for spans that end after it (the server span).
DECIDED_MEMORY = 4096
#: Traces whose spans may wait for a decision at once; beyond, the oldest are dropped.
MAX_PENDING_TRACES = 4096
#: Spans one trace may hold while it waits.
MAX_SPANS_PER_TRACE = 128
#: A trace with no decision after this long (a request that never answered) is dropped.
PENDING_TTL_SECONDS = 120.0


def http_outcome(status: int) -> Outcome:
    """The outcome of an HTTP answer with ``status``."""
    if status == 503:
        return Outcome.REFUSED
    if status == 504:
        return Outcome.TIMEOUT
    return Outcome.ERROR if status >= 500 else Outcome.OK


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


@dataclass(slots=True)
class _Pending:
    """One undecided trace: its finished spans, and the batch spans waiting on it."""

    since: float
    spans: list[ReadableSpan] = field(default_factory=list)
    batches: list[_BatchWait] = field(default_factory=list)


@dataclass(slots=True)
class _BatchWait:
    """A batch span waiting for its requests' decisions: kept when any is kept."""

    span: ReadableSpan
    undecided: set[int]
    done: bool = False


class TailSamplingProcessor(SpanProcessor):
    """Holds each trace's finished spans until `TailSampling.decide` rules on the trace,
    then passes them to ``downstream`` (the exporting processors) or drops them."""

    def __init__(self, downstream: Sequence[SpanProcessor]) -> None:
        """Forward kept spans to ``downstream``."""
        self._downstream = tuple(downstream)
        self._lock = threading.Lock()
        # Keyed by each request's local root span (its server span), not by trace: a
        # caller may send several requests under one trace id, each decided alone.
        self._root_of: dict[int, int] = {}  # running span id -> its request's root
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._decided: OrderedDict[int, bool] = OrderedDict()

    # --- the SDK's side -----------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note which request the span belongs to (its local root); let the downstream
        processors see the start (they do nothing with it)."""
        context = span.context
        if context is not None:
            parent = span.parent
            with self._lock:
                self._root_of[context.span_id] = (
                    context.span_id
                    if parent is None or parent.is_remote
                    else self._root_of.get(parent.span_id, parent.span_id)
                )
        for processor in self._downstream:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Forward, drop, or hold ``span`` until its request is decided."""
        context = span.context
        if context is None:
            return
        forward = False
        with self._lock:
            root = self._root_of.pop(context.span_id, context.span_id)
            decided = self._decided.get(root)
            if decided is not None:
                forward = decided
            elif span.parent is None and span.links:
                forward = self._hold_batch(span)
            elif self._room(root):
                self._hold(root).spans.append(span)
        if forward:
            self._forward([span])

    def _room(self, root: int) -> bool:
        pending = self._pending.get(root)
        return pending is None or len(pending.spans) < MAX_SPANS_PER_TRACE

    def _hold(self, root: int) -> _Pending:
        pending = self._pending.get(root)
        if pending is None:
            self._expire()
            pending = self._pending[root] = _Pending(time.monotonic())
        return pending

    def _hold_batch(self, span: ReadableSpan) -> bool:
        """A batch span (a root linked to its requests' spans): kept now when a request
        is already kept, dropped when all are dropped, else held on each undecided one."""
        linked = {
            self._root_of.get(link.context.span_id, link.context.span_id)
            for link in span.links
            if link.context is not None
        }
        if any(self._decided.get(root) for root in linked):
            return True
        undecided = {root for root in linked if root not in self._decided}
        if not undecided:
            return False
        wait = _BatchWait(span, undecided)
        for root in undecided:
            self._hold(root).batches.append(wait)
        return False

    def _expire(self) -> None:
        """Drop the requests that waited too long, and the oldest beyond the bound."""
        horizon = time.monotonic() - PENDING_TTL_SECONDS
        while self._pending:
            root, oldest = next(iter(self._pending.items()))
            if oldest.since >= horizon and len(self._pending) < MAX_PENDING_TRACES:
                break
            del self._pending[root]

    # --- the decision -------------------------------------------------------------------
    def settle(self, root: int, keep: bool) -> None:
        """Rule on the request whose server span is ``root``: pass on its held spans
        (and the batch spans that wait on it) when kept, drop them otherwise."""
        kept: list[ReadableSpan] = []
        with self._lock:
            self._remember(root, keep)
            pending = self._pending.pop(root, None)
            if pending is not None:
                if keep:
                    kept += pending.spans
                for wait in pending.batches:
                    wait.undecided.discard(root)
                    if wait.done:
                        continue
                    if keep:
                        wait.done = True
                        kept.append(wait.span)
                    elif not wait.undecided:
                        wait.done = True
        if kept:
            self._forward(kept)

    def _remember(self, root: int, keep: bool) -> None:
        self._decided[root] = keep
        self._decided.move_to_end(root)
        while len(self._decided) > DECIDED_MEMORY:
            self._decided.popitem(last=False)

    def _forward(self, spans: list[ReadableSpan]) -> None:
        for span in spans:
            for processor in self._downstream:
                processor.on_end(span)

    def shutdown(self) -> None:
        """Shut the downstream processors down (what still waits is dropped)."""
        for processor in self._downstream:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the downstream processors."""
        return all(p.force_flush(timeout_millis) for p in self._downstream)


@dataclass(slots=True)
class TailSampling:
    """The keep-or-drop rule, applied when a request's answer is known."""

    processor: TailSamplingProcessor
    ratio: float  # TRACE_SAMPLE_RATIO: the share of healthy, fast traces kept
    slow_seconds: float  # TRACE_SLOW_MS: slower than this is kept
    on_kept: Callable[[str], None] | None = None  # counts each kept trace by reason
    random: Callable[[], float] = field(default=random.random)

    def reason(self, outcome: Outcome, duration_seconds: float, sampled_parent: bool) -> str | None:
        """Why the trace is kept, or None to drop it."""
        if outcome is not Outcome.OK:
            return outcome.value
        if duration_seconds > self.slow_seconds:
            return "slow"
        if sampled_parent:
            return "parent_sampled"
        if self.ratio > 0 and self.random() < self.ratio:
            return "ratio"
        return None

    def decide(
        self,
        server_span: trace.Span,
        outcome: Outcome,
        duration_seconds: float,
        traceparent: str | None,
    ) -> bool | None:
        """Decide now on the request whose server span (its local root) is
        ``server_span``, which arrived with ``traceparent``: pass on or drop its spans,
        count a keep, and return whether it was kept (None for an untraced request)."""
        context = server_span.get_span_context()
        if not context.is_valid:
            return None
        why = self.reason(outcome, duration_seconds, parent_sampled(traceparent))
        self.processor.settle(context.span_id, why is not None)
        if why is not None and self.on_kept is not None:
            self.on_kept(why)
        return why is not None
