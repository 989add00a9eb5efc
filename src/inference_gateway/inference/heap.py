"""The cyclic garbage collector, kept off the request path.

A worker's heap is mostly long-lived: modules, the app, each loaded model and its
runtime. CPython's cyclic collector nonetheless walks all of it in every full
collection, and under load those come every few seconds (requests in flight are
promoted through the generations): a 50-60 ms pause of the event loop each time on
the reference VM. Once the first model is loaded and warm, before the worker reports
ready, everything alive is moved to the permanent generation (`gc.freeze`), which the
collector never scans; what requests allocate afterwards is collected as before.

Only once: a later freeze (a model loaded or reloaded while serving) would also freeze
the requests in flight, and whatever of theirs later became cyclic garbage (an error's
traceback and its frames) could never be collected. Models loaded later are walked as
before.

The collector is the process's: only the process's owner switches this on
(`inference_gateway.main`, which ``inference-gateway serve`` and
``uvicorn inference_gateway.main:app`` run), not an app built inside someone else's
process (a test, an embedding program).
"""

from __future__ import annotations

import gc

_enabled = False
_done = False


def freeze_after_loads() -> None:
    """From now on, `freeze_long_lived` acts (this process owns its collector)."""
    global _enabled  # noqa: PLW0603 - the collector is process-wide too
    _enabled = True


def freeze_long_lived() -> None:
    """When switched on, the first time: collect what is garbage now, then move every
    remaining object out of the cyclic collector's reach (they are still freed when no
    longer referenced)."""
    global _done  # noqa: PLW0603 - once per process
    if _enabled and not _done:
        _done = True
        gc.collect()
        gc.freeze()
