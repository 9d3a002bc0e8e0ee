"""Shared fixtures: tests that need root fail (not skip) in CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/ helpers (helpers_rq.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def need_root() -> None:
    """Skip without root, except in CI (CI=true), where a missing privilege is a failure."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("this test needs root (CI=true: not skipped)")
    pytest.skip("needs root")
