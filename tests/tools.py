"""Tests that need a program from outside Python (Chromium, HAProxy, kubectl, podman).

On a developer's machine such a test skips, saying what to install; in CI
(``CI=true``, as ``.ci/run`` runs) it fails: CI installs what they need (``make
tools``), so a test that cannot run there is a broken setup, never a green run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: Whether this is a CI run, by the variable CI services set.
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Stop a test that cannot run here: fail it in CI, skip it elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a test that cannot run fails)", pytrace=False)
    pytest.skip(reason)
