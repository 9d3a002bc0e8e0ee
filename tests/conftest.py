"""Shared fixtures: tests that need root fail (not skip) in CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/ helpers (helpers_rq.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kernel", default=None, metavar="KERNEL",
        help="run these tests inside a Debian kernel booted under QEMU (python -m vmtest): "
             "5.10, 6.1, 6.1-rt or 6.12",
    )  # fmt: skip


def pytest_cmdline_main(config: pytest.Config) -> object:
    """``pytest --kernel 6.1 ARGS``: the same pytest ARGS as root inside that kernel, with
    this root read-only (caches off, deadlines scaled for the emulated CPU)."""
    kernel = config.getoption("--kernel")
    if not kernel:
        return None
    args, skip = [], False
    for arg in config.invocation_params.args:
        if skip or arg == "--kernel" or arg.startswith("--kernel="):
            skip = arg == "--kernel"
            continue
        args.append(str(arg))
    sys.path.insert(0, str(REPO))
    from vmtest.__main__ import main

    return main(["run", kernel, "-e", "CI=true", "-e", "PYTHONDONTWRITEBYTECODE=1",
                 "-e", "PYBPF_TEST_PATIENCE=12", "--",
                 sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args])  # fmt: skip


@pytest.fixture
def need_root() -> None:
    """Skip without root, except in CI (CI=true), where a missing privilege is a failure."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("this test needs root (CI=true: not skipped)")
    pytest.skip("needs root")
