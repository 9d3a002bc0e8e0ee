"""`pybpf run path/to/my_prog.py`: a user's program file with the same DSL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest  # noqa: E402
from helpers_rq import patience

pytestmark = pytest.mark.kernel

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "switches.py"


def test_user_program_file_runs(tmp_path, need_root):
    # Run from elsewhere, with the file given by path.
    out = subprocess.run(
        [sys.executable, "-m", "pybpf", "run", str(EXAMPLE), "--count", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=patience(30),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "CPU PREV -> NEXT"
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 20
    cpus = os.sched_getaffinity(0)
    for cpu, prev, arrow, nxt in rows:
        assert int(cpu) in cpus and arrow == "->"
        assert int(prev) != int(nxt) or int(prev) == 0
    # Consecutive switches on one CPU chain: next of one is prev of the following.
    by_cpu: dict[str, list[tuple[int, int]]] = {}
    for cpu, prev, _, nxt in rows:
        by_cpu.setdefault(cpu, []).append((int(prev), int(nxt)))
    chained = sum(a[1] == b[0] for seq in by_cpu.values() for a, b in zip(seq, seq[1:]))
    assert chained >= len(rows) - len(by_cpu) - 2  # allow for lost samples at the edges


def test_program_file_without_tool_is_one_clear_error(tmp_path):
    bad = tmp_path / "empty.py"
    bad.write_text("x = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "pybpf", "run", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert out.stderr.startswith("pybpf: error:") and "TOOL" in out.stderr
    assert "Traceback" not in out.stderr
