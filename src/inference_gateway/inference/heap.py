"""The cyclic garbage collector, kept off the request path.

A worker's heap is mostly long-lived: modules, the app, each loaded model and its
runtime. CPython's cyclic collector nonetheless walks all of it in every full
collection, and under load those come every few seconds (requests in flight are
promoted through the generations): a 50-60 ms pause of the event loop each time on
the reference VM. Once a model is loaded and warm, everything alive is moved to the
permanent generation (`gc.freeze`), which the collector never scans; what requests
allocate afterwards is collected as before.

The collector is the process's: only the process's owner switches this on
(`inference_gateway.main`, which ``inference-gateway serve`` and
``uvicorn inference_gateway.main:app`` run), not an app built inside someone else's
process (a test, an embedding program).
"""

from __future__ import annotations

import gc

_enabled = False


def freeze_after_loads() -> None:
    """From now on, `freeze_long_lived` acts (this process owns its collector)."""
    global _enabled  # noqa: PLW0603 - the collector is process-wide too
    _enabled = True


def freeze_long_lived() -> None:
    """When switched on: collect what is garbage now, then move every remaining object
    out of the cyclic collector's reach (they are still freed when no longer
    referenced)."""
    if _enabled:
        gc.collect()
        gc.freeze()
