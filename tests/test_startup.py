"""What `pybpf run` imports on its way to tracing, and the pieces that keep the list short.

The import graph is read from ``python -X importtime`` (the interpreter's own record of every
module it imported) of a real run that loads, attaches and prints its header.  Module counts
and names are deterministic; the time budget is generous (the CPUs may be shared).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from policy import require_root

from pybpf.record import Factory, FrozenRecord, Record
from pybpf.runner import HelpFormatter, load_tool, terminal_columns, tool_parser

ROOT = Path(__file__).resolve().parent.parent

# Never on the tracing path: heavy dependencies, and stdlib modules that cost milliseconds
# (dataclasses -> inspect -> ast/dis/tokenize; shutil -> bz2/lzma; pathlib -> urllib).
HEAVY = ["construct", "pyroute2", "prometheus_client", "hypothesis", "dataclasses", "inspect",
         "ast", "dis", "tokenize", "shutil", "bz2", "lzma", "pathlib", "urllib.parse",
         "importlib.util", "tempfile", "subprocess", "threading", "pickle", "hashlib"]
MAX_MODULES = 75  # beyond the interpreter's own start: argparse/re/enum ~25, ctypes, json,
# pybpf ~22 (92 in all in a plain venv)
MAX_IMPORT_MS = 300.0  # all of them: ~30 ms on an idle 2-vCPU VM


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _parse(stderr: str) -> dict[str, tuple[int, int]]:
    found = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            self_us, cum_us, name = line[len("import time:"):].split("|")
            if self_us.strip().isdigit():
                found[name.strip()] = (int(self_us), int(cum_us))
    return found


def interpreter_start() -> set[str]:
    """What this interpreter imports before any pybpf code runs (site, .pth files: an
    editable install's finder imports pathlib and importlib.util itself; ``-m`` itself
    loads runpy, which imports importlib.util)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import runpy"], cwd=ROOT,
                         env=_clean_env(), capture_output=True, text=True, check=True)
    return set(_parse(res.stderr))


def needs_root() -> None:
    require_root()


def imports_of(argv: list[str], header: bytes) -> dict[str, tuple[int, int]]:
    """module -> (self us, cumulative us) for a run stopped (SIGINT) once ``header`` shows."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "pybpf", *argv],
                            cwd=ROOT, env=_clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = b""
    while header not in seen:
        line = proc.stdout.readline()
        assert line, proc.communicate()[1].decode()[-2000:]
        seen += line
    time.sleep(0.3)  # into the poll loop (a SIGINT just after the header ends with 130)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    base = interpreter_start()
    return {name: t for name, t in _parse(err.decode()).items() if name not in base}


@pytest.mark.parametrize("argv, header", [
    (["run", "runqslower", "--min-us", "200"], b"LAT(us)"),
    (["run", "runqlat"], b"Hit Ctrl-C"),
])  # fmt: skip
@pytest.mark.kernel
def test_tracing_path_imports_no_heavy_module(argv: list[str], header: bytes) -> None:
    needs_root()
    found = imports_of(argv, header)
    assert "pybpf.loader" in found and "pybpf.programs._runq" in found  # the real path
    assert [m for m in HEAVY if m in found] == []
    assert len(found) <= MAX_MODULES, sorted(found)
    total_ms = sum(s for s, _ in found.values()) / 1000
    assert total_ms <= MAX_IMPORT_MS, f"imports took {total_ms:.0f} ms"


def test_help_imports_no_heavy_module() -> None:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "pybpf", "run", "runqslower",
                          "--help"], cwd=ROOT, env=_clean_env(), capture_output=True, text=True)
    assert res.returncode == 0 and "usage:" in res.stdout
    names = set(_parse(res.stderr)) - interpreter_start()
    assert [m for m in HEAVY if m in names] == []


# ----------------------------------------------------------------- argparse without shutil


@pytest.mark.parametrize("columns", ["40", "80", "132"])
def test_help_formatter_same_text_as_argparse(columns: str, monkeypatch: pytest.MonkeyPatch,
                                              ) -> None:  # fmt: skip
    """Every shipped tool's --help is exactly what argparse's own formatter prints."""
    monkeypatch.setenv("COLUMNS", columns)
    import shutil

    assert terminal_columns() == shutil.get_terminal_size().columns == int(columns)
    for name in ("runqslower", "runqlat"):
        ours = tool_parser(load_tool(name), f"pybpf run {name}")
        theirs = tool_parser(load_tool(name), f"pybpf run {name}")
        theirs.formatter_class = argparse.HelpFormatter
        assert ours.formatter_class is HelpFormatter
        assert ours.format_help() == theirs.format_help()


def test_terminal_columns_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $COLUMNS and stdout not a terminal: 80, as shutil.get_terminal_size's fallback."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "__stdout__", io.StringIO())
    assert terminal_columns() == 80


# ----------------------------------------------------------------- records as dataclasses


class Point(Record):
    _fields = ("x", "y", "tags")
    _defaults = {"y": 0, "tags": Factory(list)}


class FPoint(FrozenRecord):
    _fields = ("x", "y")
    _defaults = {"y": 0}


def test_record_has_dataclass_semantics() -> None:
    import dataclasses

    @dataclasses.dataclass
    class DPoint:
        x: int
        y: int = 0
        tags: list = dataclasses.field(default_factory=list)

    a, b = Point(1), Point(x=1, y=0)
    assert a == b and a.tags is not b.tags and a.tags == []
    assert repr(Point(1, 2, ["t"])).endswith("Point(x=1, y=2, tags=['t'])")
    assert repr(DPoint(1, 2, ["t"])).endswith("DPoint(x=1, y=2, tags=['t'])")
    assert Point(1) != Point(2) and Point(1) != FPoint(1)
    assert Point(1, 2)._replace(y=5) == Point(1, 5)
    with pytest.raises(TypeError):
        hash(Point(1))  # a mutable dataclass with eq is unhashable
    a.y = 7
    assert a.y == 7
    for bad in (lambda: Point(), lambda: Point(1, 2, [], 4), lambda: Point(1, z=2),
                lambda: Point(1, x=2), lambda: Point(1)._replace(z=1)):
        with pytest.raises(TypeError):
            bad()


def test_frozen_record() -> None:
    p = FPoint(1, 2)
    assert hash(p) == hash(FPoint(x=1, y=2)) and {p, FPoint(1, 2)} == {p}
    with pytest.raises(AttributeError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y


def test_instruction_and_specs_keep_their_semantics() -> None:
    from pybpf import isa
    from pybpf.object import MapSpec, ObjectSpec

    i = isa.Instruction(0xB7, 1, imm=5)
    assert i == isa.Instruction(opcode=0xB7, dst=1, src=0, off=0, imm=5)
    assert i.with_(imm=6).imm == 6 and i.imm == 5
    assert hash(i) == hash(isa.Instruction(0xB7, 1, 0, 0, 5))
    with pytest.raises(AttributeError):
        i.imm = 1  # type: ignore[misc]
    assert repr(i).startswith("Instruction(opcode=183, dst=1, src=0, off=0, imm=5, label=None")
    m = MapSpec("m", 1, 4, 8, 16)
    assert m._replace(max_entries=2).max_entries == 2 and m.flags == 0
    o1, o2 = ObjectSpec("a", []), ObjectSpec("a", [])
    assert o1 == o2 and o1.maps is not o2.maps
