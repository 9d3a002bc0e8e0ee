"""Every failure a user can cause: one clear line on stderr, a non-zero exit, no traceback.

Errors of pybpf itself print ``pybpf: error: ...``; bad flags get argparse's standard
``usage: ...`` lines followed by one ``...: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import importlib.util
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers_rq import REPO, kernel_ids, leaked_since, tool_env
from policy import require_root

BTF_BLOB = REPO / "btf" / "firecracker-6.18.44-fc-v657.btf.xz"


def pybpf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pybpf", *args],
        cwd=REPO,
        env=tool_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(p: subprocess.CompletedProcess, *words: str) -> str:
    assert p.returncode not in (0, None), (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybpf: error: "), p.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def assert_usage_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert lines and lines[0].startswith("usage: "), p.stderr
    assert ": error: " in lines[-1], p.stderr
    assert sum(": error: " in line for line in lines) == 1, p.stderr
    for word in words:
        assert word.lower() in lines[-1].lower(), (word, lines[-1])
    assert p.stdout == "", p.stdout


@pytest.fixture(scope="module")
def btf_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("btf")
    (d / "empty.btf").write_bytes(b"")
    (d / "random.btf").write_bytes(os.urandom(64 * 1024))
    blob = lzma.decompress(BTF_BLOB.read_bytes())
    (d / "half.btf").write_bytes(blob[: len(blob) // 2])
    (d / "header_only.btf").write_bytes(blob[:24])
    xz = BTF_BLOB.read_bytes()
    (d / "truncated.btf.xz").write_bytes(xz[: len(xz) // 2])
    (d / "a_directory").mkdir()
    return d


def test_btf_missing():
    p = pybpf("run", "runqslower", "--btf", "/nonexistent")
    assert_one_error_line(p, "/nonexistent")
    assert p.stdout == ""


@pytest.mark.parametrize(
    "name", ["empty.btf", "random.btf", "half.btf", "header_only.btf", "truncated.btf.xz",
             "a_directory"],
)  # fmt: skip
def test_btf_corrupt(btf_files, name):
    """An empty file (a kernel without BTF), random bytes, a real blob cut short (raw and
    compressed), a directory."""
    p = pybpf("run", "runqslower", "--btf", str(btf_files / name))
    assert_one_error_line(p, "BTF")
    assert p.stdout == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (["--min-us", "-5"], ["min-us"]),
        (["--min-us", "abc"], ["min-us"]),
        (["-5"], []),
        (["abc"], ["min_us"]),
        (["-p", "0"], ["pid"]),
        (["-p", "x"], ["pid"]),
        (["-t", "-1"], []),
        (["-c", ""], ["comm"]),
        (["-c", "a" * 16], ["comm"]),
        (["--bogus"], ["--bogus"]),
        (["5", "--min-us", "6"], []),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and isinstance(v[0], str) else "",
)
def test_bad_flags(args, words):
    assert_usage_error(pybpf("run", "runqslower", *args), *words)


def test_comm_of_15_bytes_is_accepted_by_the_parser():
    """The limit is TASK_COMM_LEN - 1: 15 bytes pass argument checking (then fail later
    only on something else, e.g. the BTF here)."""
    p = pybpf("run", "runqslower", "-c", "a" * 15, "--btf", "/nonexistent")
    assert_one_error_line(p, "/nonexistent")


def test_unknown_program():
    assert_one_error_line(pybpf("run", "nosuchprogram"), "nosuchprogram")
    assert_one_error_line(pybpf("run", "./nosuchprogram.py"), "nosuchprogram.py")
    assert_one_error_line(pybpf("explain", "nosuchprogram"), "nosuchprogram")


def test_existing_file_that_is_not_a_program(tmp_path):
    """A file that exists is never "no program named": the error says what it is."""
    for command in ("run", "explain", "dump"):
        line = assert_one_error_line(pybpf(command, "README.md"), "README.md")
        assert "is not a pybpf program" in line and ".py" in line and "TOOL" in line, line
        assert "no program named" not in line
    line = assert_one_error_line(pybpf("run", "docs"), "docs is a directory")
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    assert_one_error_line(pybpf("run", str(bad)), f"{bad}:1: not Python")
    assert_one_error_line(pybpf("run", "runqlat.py"), "no program file 'runqlat.py'")


def test_unknown_command():
    assert_one_error_line(pybpf("nosuchcommand"), "nosuchcommand")


def test_explain_missing_btf():
    assert_one_error_line(pybpf("explain", "runqslower", "--btf", "/nonexistent"), "/nonexistent")


def test_explain_corrupt_btf(btf_files):
    assert_one_error_line(pybpf("explain", "runqslower", "--btf", str(btf_files / "half.btf")))


# --- without privileges ----------------------------------------------------------------

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def _readable_by_nobody(path: Path) -> bool:
    p = subprocess.run([*NOBODY, "test", "-r", str(path)], capture_output=True, timeout=10)
    return p.returncode == 0


def _python_for_nobody() -> str:
    for exe in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        p = subprocess.run([*NOBODY, exe, "-c", "pass"], capture_output=True, timeout=30)
        if p.returncode == 0:
            return exe
    pytest.fail("no Python interpreter that uid 65534 may run")


@pytest.fixture
def nobody_tree():
    """(python, PYTHONPATH) with which uid 65534 can import pybpf and its programs."""
    require_root()
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed")
    python = _python_for_nobody()
    tmp = tempfile.mkdtemp(prefix="pybpf-nobody-")
    try:
        os.chmod(tmp, 0o755)
        for name in ("pybpf", "programs"):
            shutil.copytree(REPO / name, Path(tmp) / name,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        # Pure-Python dependencies the other interpreter may lack.
        for dep in ("construct",):
            spec = importlib.util.find_spec(dep)
            if spec and spec.submodule_search_locations:
                src = Path(next(iter(spec.submodule_search_locations)))
                shutil.copytree(src, Path(tmp) / dep, ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(tmp):
            for n in dirs:
                os.chmod(os.path.join(root, n), 0o755)
            for n in files:
                os.chmod(os.path.join(root, n), 0o644)
        assert _readable_by_nobody(Path(tmp) / "pybpf" / "cli.py")
        yield python, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.kernel
def test_non_root_user(nobody_tree):
    python, path = nobody_tree
    before = kernel_ids()
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run(
        [*NOBODY, python, "-m", "pybpf", "run", "runqslower", "0"],
        cwd=path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = assert_one_error_line(p)
    assert "root" in line or "CAP_BPF" in line, line
    assert p.stdout == ""
    assert not leaked_since(before), "objects left in the kernel"


@pytest.mark.kernel
def test_root_without_capabilities():
    """uid 0 stripped of every capability (as in an unprivileged container): the
    kernel's EPERM becomes one line naming what is missing."""
    require_root()
    before = kernel_ids()
    p = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "pybpf",
         "run", "runqslower", "0"],
        cwd=REPO, env=tool_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    line = assert_one_error_line(p)
    assert "root" in line or "CAP_BPF" in line, line
    assert not leaked_since(before), "objects left in the kernel"
