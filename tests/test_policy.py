"""The tier markers tell the truth: ``pytest -m pure`` passes as an unprivileged user with no
outside tool on PATH, and nothing in it is skipped.

The tree is copied where uid 65534 can read it, laid out as an installed pybpf (the tools
inside the package), with the test dependencies beside it; PATH holds the interpreter alone,
so a test that needs bpftool, llvm-mc-19 or pahole (or root) but is not marked so fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from policy import require_tools

pytestmark = pytest.mark.kernel  # root: to become uid 65534

REPO = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
HEAVY = ("ruff", "pip", "setuptools", "_distutils_hack", "pkg_resources")


def _python_for_nobody() -> str:
    """An interpreter uid 65534 can run, and run again from a test (tests start
    ``sys.executable -m pybpf``): a probe that spawns itself."""
    probe = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)"
    for exe in ("/usr/bin/python3", os.path.realpath(sys.executable)):
        if not os.path.exists(exe):
            continue
        p = subprocess.run([*NOBODY, exe, "-c", probe], capture_output=True, timeout=60)
        if p.returncode == 0:
            return exe
    pytest.fail("no Python interpreter that uid 65534 may run")


def _copy(src: Path, dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory uid 65534 can reach (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pybpf-pure-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_pure_tests_pass_without_root_or_outside_tools(open_tmp: Path) -> None:
    tmp_path = open_tmp
    site = tmp_path / "site"
    site.mkdir()
    tree, home, bin_ = (tmp_path / n for n in ("tree", "home", "bin"))
    _copy(REPO / "pybpf", tree / "pybpf")
    _copy(REPO / "programs", tree / "pybpf" / "programs")  # as installed
    for name in ("tests", "btf", "docs", "bench", "dev", "vmtest"):
        _copy(REPO / name, tree / name)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        if entry.name.startswith(("__editable__", "pybpf")) or entry.suffix == ".pth" \
                or entry.name.split("-")[0] in HEAVY:  # fmt: skip
            continue
        (_copy if entry.is_dir() else shutil.copy)(entry, site / entry.name)  # type: ignore[operator]
    python = _python_for_nobody()
    bin_.mkdir()
    (bin_ / "python3").symlink_to(python)
    home.mkdir()
    for root, _dirs, files in os.walk(tmp_path):
        os.chmod(root, 0o777 if Path(root) in (home, tree) else 0o755)
        for n in files:
            if not os.path.islink(os.path.join(root, n)):  # chmod would follow it
                os.chmod(os.path.join(root, n), 0o644)
    env = {"PATH": str(bin_), "HOME": str(home), "PYTHONPATH": f"{tree}:{site}",
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}  # fmt: skip
    setpriv = [require_tools("setpriv"), *NOBODY[1:]]  # absolute: PATH below has python only
    p = subprocess.run(
        [*setpriv, python, "-m", "pytest", "-m", "pure", "-q", "-p", "no:cacheprovider", "-rfEs"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    failed = "\n".join(ln for ln in p.stdout.splitlines() if ln.startswith(("FAILED", "ERROR")))
    tail = failed[:4000] + "\n" + p.stdout[-2000:] + p.stderr[-1000:]
    assert p.returncode == 0, tail
    summary = p.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), tail
    assert "skipped" not in summary and "error" not in summary, tail
