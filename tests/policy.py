"""What a test needs and does not have: skipped on a developer's machine, a failure in CI.

CI (``CI=true``) runs as root with every oracle installed, so there a missing privilege or
tool is a broken environment, never a reason to skip: a skipped test proves nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip for lack of ``reason``, or fail when CI=true (CI must have everything)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: not skipped)")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root")


def require_tools(*tools: str) -> str:
    """The path of the first tool; every one of ``tools`` must be on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable(f"needs {', '.join(missing)} (.ci/run installs them)")
    return shutil.which(tools[0]) or ""
