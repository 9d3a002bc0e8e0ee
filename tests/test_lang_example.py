"""`pybpf run docs/examples/switch_events.py`: a user's tool written in the language."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest  # noqa: E402

pytestmark = pytest.mark.kernel

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "switch_events.py"
CHILD = "import time\nfor _ in range(3000):\n    time.sleep(0.001)\n"


def test_example_runs_and_reports_the_watched_process(tmp_path, need_root):
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        with open(f"/proc/{child.pid}/comm") as f:
            comm = f.read().strip()
        out = subprocess.run(
            [sys.executable, "-m", "pybpf", "run", str(EXAMPLE), "--pid", str(child.pid),
             "--count", "20"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        child.kill()
        child.wait()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "PREV -> NEXT PARENT COMM"
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 20
    for prev, arrow, nxt, parent, name in rows:
        assert arrow == "->" and int(nxt) == child.pid and int(prev) != child.pid
        assert int(parent) == os.getpid() and name == comm


def test_compile_error_is_one_line_with_the_python_position(tmp_path):
    bad = tmp_path / "bad.py"
    text = EXAMPLE.read_text().replace("ev.parent = next.real_parent.tgid",
                                       "ev.parent = next.no_such_member")  # fmt: skip
    bad.write_text(text)
    line = text.splitlines().index("    ev.parent = next.no_such_member") + 1
    out = subprocess.run([sys.executable, "-m", "pybpf", "run", str(bad), "--pid", "1"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"pybpf: error: {bad}:{line}:")
    assert "no_such_member" in out.stderr and len(out.stderr.splitlines()) == 1


def test_verifier_rejection_names_the_python_line(tmp_path, need_root):
    """The language does not check for None: the verifier does, and the error names the
    Python line of the refused access."""
    bad = tmp_path / "unchecked.py"
    bad.write_text(UNCHECKED)
    line = UNCHECKED.splitlines().index("    return v + 1") + 1
    out = subprocess.run([sys.executable, "-m", "pybpf", "run", str(bad)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith(f"pybpf: error: {bad}:{line}: program on_switch"), first
    assert "map_value_or_null" in out.stderr  # the verifier's own words follow


UNCHECKED = """
from pybpf.lang import HashMap, program, s32, u32, u64
from pybpf.lang.tool import LangTool

counts = HashMap(u32, u64, 16)


@program("tp_btf/sched_switch")
def on_switch(preempt, prev, next) -> s32:
    v = counts.get(next.pid)
    return v + 1


class Unchecked(LangTool):
    name = "unchecked"
    programs = [on_switch]


TOOL = Unchecked()
"""


def test_dump_interleaves_the_python_source():
    text = EXAMPLE.read_text().splitlines()
    line = text.index("    ev.comm = next.comm") + 1
    out = subprocess.run([sys.executable, "-m", "pybpf", "dump", str(EXAMPLE)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"# switch_events.py:{line}: ev.comm = next.comm" in out.stdout
    # the comm copy's relocation note follows its source line on the same instruction
    assert "CO-RE byte_off task_struct.comm" in out.stdout
