"""Errors say what went wrong, not how a protocol answers it."""

from __future__ import annotations

import subprocess
import sys

from inference_gateway import errors
from inference_gateway.api.problems import http_status
from inference_gateway.errors import ErrorKind, InferenceGatewayException

#: Imported in a fresh interpreter; none of them may pull in a web framework.
_PROTOCOL_FREE = """
import importlib, pkgutil, sys
import inference_gateway.errors
import inference_gateway.inference as inference
for module in pkgutil.iter_modules(inference.__path__):
    importlib.import_module("inference_gateway.inference." + module.name)
web = sorted({m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette")})
loaded = [m for m in sys.modules if m.startswith("inference_gateway.inference.")]
print(len(loaded), *web)
"""


def test_errors_and_inference_import_no_web_framework() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROTOCOL_FREE], capture_output=True, text=True, check=True
    )
    count, *web = result.stdout.split()
    assert int(count) >= 8  # every inference module was really imported
    assert web == []


def _all_exceptions() -> list[type[InferenceGatewayException]]:
    return [getattr(errors, name) for name in errors.gateway_exception_names()]


def test_only_server_failures_are_unexpected() -> None:
    for cls in _all_exceptions():
        exc = cls.__new__(cls)
        assert exc.expected is (cls.kind is not ErrorKind.INTERNAL), cls
        assert (cls.kind is ErrorKind.INTERNAL) is (http_status(exc) == 500), cls


def test_refusals_have_a_reason_and_a_retry_hint() -> None:
    for cls in _all_exceptions():
        if cls.kind in (ErrorKind.REFUSED, ErrorKind.UNAVAILABLE):
            assert cls.reject_reason, cls
        if cls.retry_after_seconds is not None:
            assert cls.kind in (ErrorKind.REFUSED, ErrorKind.UNAVAILABLE), cls
