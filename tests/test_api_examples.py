"""docs/api.md's examples, run on the real kernel: every code block of the document is a
verbatim part of a file in docs/examples/, and every such file is run here (switches.py in
test_user_program.py) with an oracle: the pids of processes we start, the kernel's own
schedstat, bpftool's dump of a pinned map."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_rq import REPO, SPINNER, Children, PybpfProcess, schedstat, tool_env

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]

EXAMPLES = REPO / "docs" / "examples"
API = REPO / "docs" / "api.md"
TESTED = {"switches.py": "test_user_program.py", "execsnoop.py": "here",
          "runq_count.py": "here", "maps_tour.py": "here", "standalone.py": "here",
          "switch_events.py": "test_lang_example.py",
          "reads_kprobe.py": "test_examples_probes.py",
          "reads_fentry.py": "test_examples_probes.py"}  # fmt: skip


def test_every_code_block_is_a_tested_example() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(TESTED)
    sources = {p.name: p.read_text() for p in EXAMPLES.glob("*.py")}
    blocks = re.findall(r"^```python\n(.*?)^```$", API.read_text(), re.M | re.S)
    assert len(blocks) >= 5
    for block in blocks:
        assert any(block in text for text in sources.values()), block
    # and no other kind of code block that could go stale untested
    fences = re.findall(r"^```(\w*)$", API.read_text(), re.M)
    assert set(fences[::2]) <= {"python", "text"}, fences


def test_execsnoop(need_root: None, tmp_path: Path) -> None:
    """--ppid: exactly the programs this test runs, with their pids and names."""
    with Children() as kids:
        t = PybpfProcess(["run", str(EXAMPLES / "execsnoop.py"), "--ppid", str(os.getpid())],
                         tmp_path, "exec")  # fmt: skip
        kids.add(t.proc)
        t.wait_for("PID     PPID    COMM\n")
        pids = []
        for _ in range(3):
            child = subprocess.run(["/bin/true"], check=True)
            assert child.returncode == 0
        for prog in (["/bin/sleep", "0"], ["/bin/true"]):
            p = subprocess.Popen(prog)
            pids.append((p.pid, Path(prog[0]).name))
            p.wait()
        time.sleep(0.3)
        assert t.stop() == 0, t.err()
    rows = [line.split() for line in t.out().splitlines()[1:]]
    assert len(rows) == 5, rows
    assert all(int(ppid) == os.getpid() for _, ppid, _ in rows)
    assert [name for _, _, name in rows] == ["true"] * 3 + ["sleep", "true"]
    assert [(int(pid), name) for pid, _, name in rows[3:]] == pids


def test_runq_count_agrees_with_schedstat(need_root: None, tmp_path: Path) -> None:
    """-p PID counts the switch-ins of one process: schedstat's timeslices (its third field
    counts each time the task is put on a CPU), over a window in which it was frozen at
    both ends."""
    cpu = max(os.sched_getaffinity(0))
    with Children() as kids:
        victim = kids.add(subprocess.Popen(
            [sys.executable, "-c", SPINNER.replace("while True:\n    pass",
             "import time\nwhile True:\n    time.sleep(0.0005)"), str(cpu)],
            stdout=subprocess.PIPE, text=True))  # fmt: skip
        vpid = int(victim.stdout.readline())
        os.kill(vpid, signal.SIGSTOP)
        t = PybpfProcess(["run", str(EXAMPLES / "runq_count.py"), "-p", str(vpid), "60"],
                         tmp_path, "count")  # fmt: skip
        kids.add(t.proc)
        t.wait_for("Counting switch-ins")
        time.sleep(0.2)
        before = schedstat(vpid)
        os.kill(vpid, signal.SIGCONT)
        time.sleep(1.0)
        os.kill(vpid, signal.SIGSTOP)
        time.sleep(0.1)
        after = schedstat(vpid)
        assert t.stop() == 0, t.err()
    lines = t.out().splitlines()
    per_cpu = json.loads(re.fullmatch(r"switch-ins per CPU: (\[.*\])", lines[1])[1])
    assert len(per_cpu) == _possible()
    assert lines[2].split() == ["PID", "SWITCH-INS"]
    (row,) = [line.split() for line in lines[3:]]
    slices = after[2] - before[2]
    assert int(row[0]) == vpid, (row, vpid)
    assert slices > 20, (before, after)  # it slept 0.5 ms at a time for a second
    assert abs(int(row[1]) - slices) <= 0.02 * slices + 2, (row, slices)
    assert sum(per_cpu) == int(row[1])  # only the victim's switch-ins were counted


def _possible() -> int:
    count = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def test_maps_tour(need_root: None, tmp_path: Path) -> None:
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    try:
        r = subprocess.run([sys.executable, str(EXAMPLES / "maps_tour.py"), "--keep", str(bpffs)],
                           env=tool_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[:5] == [
            "hash: [(1, (100, 7)), (2, (200, 8))] len 2 2 in h: True",
            "after del: {2: (200, 8)} get(1): None",
            "batch: [2, 10, 11, 12, 13, 14]",
            "deleted: 2 left: [2, 12, 13, 14]",
            "raw: " + repr((144).to_bytes(8, "little") + (12).to_bytes(8, "little")),
        ]
        assert re.fullmatch(rf"pinned: {bpffs}/tour_hash id \d+ sees \[2, 12, 13, 14\]", out[5])
        assert out[6:] == [f"per-CPU: {_possible()} CPUs, all 5: True",
                           "per-CPU set one by one: True",
                           "frozen: 42 write refused: Operation not permitted"]  # fmt: skip
        # the oracle: bpftool reads the map the script left pinned
        dump = json.loads(subprocess.run(
            ["bpftool", "-j", "map", "dump", "pinned", str(bpffs / "tour_hash")],
            capture_output=True, text=True, check=True).stdout)  # fmt: skip
        got = {}
        for entry in dump:
            key = bytes(int(b, 16) for b in entry["key"])
            value = bytes(int(b, 16) for b in entry["value"])
            got[int.from_bytes(key, "little")] = (int.from_bytes(value[:8], "little"),
                                                  int.from_bytes(value[8:12], "little"))
        assert got == {2: (200, 8), 12: (144, 12), 13: (169, 13), 14: (196, 14)}
    finally:
        (bpffs / "tour_hash").unlink(missing_ok=True)
        subprocess.run(["umount", str(bpffs)], capture_output=True)


def test_standalone(need_root: None) -> None:
    r = subprocess.run([sys.executable, str(EXAMPLES / "standalone.py")], env=tool_env(),
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"exec of pid \d+ seen: True\n", r.stdout), r.stdout


@pytest.mark.parametrize("name", ["execsnoop.py", "runq_count.py", "switches.py"])
def test_help_of_the_examples(name: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pybpf", "run", str(EXAMPLES / name), "--help"],
                       cwd=REPO, env=tool_env(), capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith(f"usage: pybpf run {EXAMPLES / name}")
