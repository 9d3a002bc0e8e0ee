"""The test policy, in one place.

Every test belongs to a tier, declared with a marker per module (``pytestmark``) or per
test:

- ``pure`` (the default: a test with no tier marker): no root, no kernel object, no tool
  outside the venv; ``pytest -m pure`` runs anywhere, as any user, in seconds.
- ``kernel``: loads programs, creates maps or reads privileged kernel state; needs root.
- ``oracle("tool", ...)``: compares with a program no one here wrote (bpftool, llvm-mc-19,
  pahole, stress-ng, prometheus, ...); needs those tools on PATH.
- ``vm``: boots other kernels under QEMU.

What a test needs and does not have is skipped on a developer's machine and is a failure in
CI (``CI=true``), where everything is installed and the tests run as root: a skipped test
proves nothing.  ``policy.unavailable`` is the one place that decides.
"""

from __future__ import annotations

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

from policy import require_root, require_tools  # noqa: E402

TIERS = ("pure", "kernel", "oracle", "vm")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pure: no root, no kernel, no outside tool")
    config.addinivalue_line("markers", "kernel: needs root and a BPF-capable kernel")
    config.addinivalue_line("markers", "oracle(*tools): compares with outside tools on PATH")
    config.addinivalue_line("markers", "vm: boots other kernels under QEMU")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: it must see the pure marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test with no tier is pure."""
    for item in items:
        if not any(m.name in TIERS for m in item.iter_markers()):
            item.add_marker(pytest.mark.pure)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        require_root()
    tools = [t for m in item.iter_markers("oracle") for t in m.args]
    if tools:
        require_tools(*tools)


@pytest.fixture
def need_root() -> None:
    """Root for a test of a module whose other tests do not need it."""
    require_root()
