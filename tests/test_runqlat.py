"""runqlat on the real kernel: histogram shape, schedstat totals, keys, intervals, teardown.

The workload makes run-queue latency we know in advance: a victim spins on the last CPU, and
a SCHED_FIFO hog on the same CPU wakes every few ms and spins for 3 ms, then 12 ms, in turn.
The wakeup preempts the victim at once (an RT task), which then waits on the run queue for the
hog's whole spin: those waits must land in the 2048-4095 us and 8192-16383 us slots.  The
kernel's own accounting of the victim's waits, ``/proc/<pid>/task/<tid>/schedstat``, is the
oracle for the totals.
"""

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
from helpers_rq import (
    FIFO_HOG,
    REPO,
    SPINNER,
    Children,
    PybpfProcess,
    assert_gone,
    owned_bpf_ids,
    patience,
    schedstat,
    tool_env,
)
from policy import require_root

from pybpf.asm import R0, R1, R2, R3, Asm
from pybpf.programs import runqlat
from pybpf.programs._bits import log2l

pytestmark = pytest.mark.kernel

SPINS_MS = (3, 12)  # the hog's spins, alternately: slots 11 and 13 (us)
SLEEP_S = 0.006
HOG_SECONDS = 3.0



# --- pure: the histogram as trace_helpers.c prints it -----------------------------------


def test_log2_hist_text_like_trace_helpers() -> None:
    vals = [0] * runqlat.MAX_SLOTS
    vals[0], vals[1], vals[3], vals[4] = 3, 0, 80, 41
    want = (
        "     usecs               : count    distribution\n"
        "         0 -> 1          : 3        |*                                       |\n"
        "         2 -> 3          : 0        |                                        |\n"
        "         4 -> 7          : 0        |                                        |\n"
        "         8 -> 15         : 80       |****************************************|\n"
        "        16 -> 31         : 41       |********************                    |\n"
    )
    assert runqlat.format_log2_hist(vals, "usecs") == want
    assert runqlat.format_log2_hist([0] * runqlat.MAX_SLOTS, "usecs") == ""
    assert [runqlat.slot_bounds(i) for i in range(4)] == [(0, 1), (2, 3), (4, 7), (8, 15)]
    assert runqlat.slot_bounds(25) == (1 << 25, (1 << 26) - 1)


def test_bad_flags_one_line() -> None:
    for args in (["-P", "-L"], ["-P", "--pidnss"], ["0"], ["1", "0"], ["-p", "x"], ["1", "2", "3"],
                 ["--max-keys", "5"], ["-p", "1", "--max-keys", "5"], ["-T", "--json"]):
        r = subprocess.run(
            [sys.executable, "-m", "pybpf", "run", "runqlat", *args],
            cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=patience(30),
        )  # fmt: skip
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "error:" in r.stderr, (args, r.stderr)


# --- the kernel: log2l ------------------------------------------------------------------


def test_log2l_in_the_kernel(need_root: None) -> None:
    """bits.bpf.h's log2l() as the DSL emits it, run by the kernel (BPF_PROG_TEST_RUN on a
    raw_tp program: ctx is the u64 under test) against floor(log2(v))."""
    from pybpf import syscall, uapi

    a = Asm()
    a.ldx(R2, R1, 0, size=8)
    log2l(a, R0, R2, R3)
    a.exit()
    from pybpf import isa

    values = [0, 1, 2, 3, 4, 5, 7, 8, 1000, 4095, 4096, (1 << 32) - 1, 1 << 32, (1 << 32) + 1]
    values += [(1 << k) + d for k in range(1, 64) for d in (-1, 0, 1)]
    values += [(1 << 64) - 1, 0x123456789ABCDEF0]
    with syscall.prog_load(uapi.BPF_PROG_TYPE_RAW_TRACEPOINT, isa.encode(a.assemble())) as fd:
        for v in values:
            got = syscall.prog_test_run(fd.fileno(), ctx_in=v.to_bytes(8, "little")).retval
            assert got == max(v.bit_length() - 1, 0), hex(v)


# --- the kernel: runqlat end to end -----------------------------------------------------


class RunqLat(PybpfProcess):
    """``pybpf run runqlat ARGS``, output to a file."""

    def __init__(self, args: list[str], tmp_path: Path, name: str) -> None:
        super().__init__(["run", "runqlat", *args], tmp_path, name)

    def wait_header(self) -> None:
        # with --json the header goes to stderr: stdout is JSON lines only
        self.wait_for("Tracing run queue latency", in_stderr="--json" in self.args)

    def histograms(self) -> list[dict]:
        """Every stdout line, parsed as JSON (there must be nothing else on stdout)."""
        assert "--json" in self.args
        assert "Tracing run queue latency" in self.err()
        return [json.loads(line) for line in self.out().splitlines()]




def slot_of(us_low: int) -> int:
    return max(us_low.bit_length() - 1, 0)


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run of the victim and hog, traced by several runqlat at once."""
    require_root()
    tmp = tmp_path_factory.mktemp("runqlat")
    cpu = max(os.sched_getaffinity(0))
    others = os.sched_getaffinity(0) - {cpu}
    assert others, "needs 2 CPUs: the tracers must not run on the victim's CPU"
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, others)  # the tracers inherit it
    try:
        with Children() as kids:
            victim = kids.add(subprocess.Popen(
                [sys.executable, "-c", SPINNER, str(cpu)], stdout=subprocess.PIPE, text=True
            ))  # fmt: skip
            vpid = int(victim.stdout.readline())
            # Frozen while the tracers start: the waits they and schedstat see are then
            # exactly those between SIGCONT and SIGSTOP below.
            os.kill(vpid, signal.SIGSTOP)
            tracers = {
                "tp_btf": RunqLat(["-L", "-p", str(vpid), "--json"], tmp, "tp_btf"),
                "raw_tp": RunqLat(["--attach", "raw_tp", "-L", "-p", str(vpid), "--json"],
                                  tmp, "raw_tp"),  # fmt: skip
                "ms": RunqLat(["-m", "-P", "-p", str(vpid), "--json"], tmp, "ms"),
                "all": RunqLat(["--json"], tmp, "all"),
            }
            for t in tracers.values():
                t.wait_header()
            before = schedstat(vpid)
            os.kill(vpid, signal.SIGCONT)
            hog = subprocess.run(
                [sys.executable, "-c", FIFO_HOG, str(cpu), ",".join(map(str, SPINS_MS)),
                 str(HOG_SECONDS), str(SLEEP_S)],
                capture_output=True, text=True, timeout=patience(60), check=True,
            )  # fmt: skip
            time.sleep(0.2)
            # Freeze the spinner: no wait of its own after this, so the schedstat window and
            # every tracer's (stopped one after the other) hold the same waits.
            os.kill(vpid, signal.SIGSTOP)
            time.sleep(0.05)
            after = schedstat(vpid)
            results = {}
            for name, t in tracers.items():
                assert t.stop() == 0, t.err_path.read_text()
                results[name] = t.histograms()
    finally:
        os.sched_setaffinity(0, saved)
    return {
        "vpid": vpid,
        "cycles": int(hog.stdout),
        "run_delay_ns": after[1] - before[1],
        "timeslices": after[2] - before[2],
        **results,
    }


def test_victim_lands_in_the_expected_slots(workload: dict) -> None:
    (h,) = workload["tp_btf"]
    assert h["tid"] == workload["vpid"] and h["unit"] == "usecs"
    by_slot = {slot_of(b["low"]): b["count"] for b in h["hist"]}
    per_spin = workload["cycles"] / len(SPINS_MS)
    for ms in SPINS_MS:
        slot = slot_of(ms * 1000)
        # each spin preempts the victim once, for the whole spin (plus a little)
        assert by_slot.get(slot, 0) >= 0.9 * per_spin, (ms, by_slot, workload["cycles"])
        assert by_slot.get(slot, 0) <= 1.1 * per_spin + 2, (ms, by_slot, workload["cycles"])
    assert sum(b["count"] for b in h["hist"]) == h["count"]


def test_totals_agree_with_schedstat(workload: dict) -> None:
    (h,) = workload["tp_btf"]
    delay, slices = workload["run_delay_ns"], workload["timeslices"]
    assert delay > 0.5e9, workload  # the hog held the victim off for most of its run
    assert abs(h["total_ns"] - delay) <= 0.1 * delay, (h["total_ns"], delay)
    assert abs(h["count"] - slices) <= 0.1 * slices, (h["count"], slices, workload)


def test_raw_tp_programs_agree(workload: dict) -> None:
    (tp,), (raw,) = workload["tp_btf"], workload["raw_tp"]
    assert raw["tid"] == workload["vpid"]
    assert abs(raw["total_ns"] - tp["total_ns"]) <= 0.05 * tp["total_ns"]
    assert abs(raw["count"] - tp["count"]) <= 0.05 * tp["count"] + 2


def test_milliseconds_and_per_process(workload: dict) -> None:
    (h,) = workload["ms"]
    assert h["unit"] == "msecs" and h["pid"] == workload["vpid"]
    assert h["comm"] == "python3" or h["comm"].startswith("python")
    by_slot = {slot_of(b["low"]): b["count"] for b in h["hist"]}
    per_spin = workload["cycles"] / len(SPINS_MS)
    assert by_slot.get(1, 0) >= 0.9 * per_spin  # 3 ms: 2 -> 3
    assert by_slot.get(3, 0) >= 0.9 * per_spin  # 12 ms: 8 -> 15


def test_unfiltered_is_one_histogram_of_everything(workload: dict) -> None:
    (h,) = workload["all"]
    assert set(h) == {"time", "ts", "unit", "count", "total_ns", "hist"}
    (victim,) = workload["tp_btf"]
    assert h["count"] >= victim["count"]
    assert h["total_ns"] >= victim["total_ns"]


def test_interval_count_timestamps_and_teardown(need_root: None, tmp_path: Path) -> None:
    t = RunqLat(["-T", "1", "2"], tmp_path, "interval")
    t.wait_header()
    ours = owned_bpf_ids(t.proc.pid)
    assert len(ours["link"]) == 3 and len(ours["prog"]) == 3, ours
    assert t.proc.wait(timeout=patience(20)) == 0  # ends by itself after 2 summaries
    text = t.out()
    stamps = re.findall(r"^\d\d:\d\d:\d\d$", text, re.M)
    assert len(stamps) == 2, text
    header = re.findall(r"^ {5}usecs {15}: count    distribution$", text, re.M)
    assert len(header) == 2, text
    rows = re.findall(r"^ *(\d+) -> (\d+) *: (\d+) *\|(\**) *\|$", text, re.M)
    assert rows and all(int(hi) >= int(lo) for lo, hi, _, _ in rows)
    assert_gone(ours)


def test_sigterm_prints_and_leaves_nothing(need_root: None, tmp_path: Path) -> None:
    t = RunqLat(["-L"], tmp_path, "term")
    t.wait_header()
    ours = owned_bpf_ids(t.proc.pid)
    time.sleep(0.5)
    assert t.stop(signal.SIGTERM) == 0
    assert re.search(r"^tid = \d+ ", t.out(), re.M), t.out()
    assert_gone(ours)


def test_pid_namespaces(need_root: None, tmp_path: Path) -> None:
    """--pidnss keys are PID namespace inode numbers: a victim in a new namespace (unshare)
    has its own key, the one /proc/<pid>/ns/pid names."""
    with Children() as kids:
        child = kids.add(subprocess.Popen(
            ["unshare", "--pid", "--kill-child", sys.executable, "-c",
             "import time\nwhile True:\n    time.sleep(0.001)\n"],
        ))  # fmt: skip
        deadline = time.monotonic() + patience(10)
        inner = None
        while inner is None and time.monotonic() < deadline:
            kids_file = Path(f"/proc/{child.pid}/task/{child.pid}/children")
            pids = kids_file.read_text().split() if kids_file.exists() else []
            inner = int(pids[0]) if pids else None
            time.sleep(0.02)
        assert inner is not None
        ns = int(re.fullmatch(r"pid:\[(\d+)\]", os.readlink(f"/proc/{inner}/ns/pid"))[1])
        host = int(re.fullmatch(r"pid:\[(\d+)\]", os.readlink("/proc/self/ns/pid"))[1])
        assert ns != host
        t = RunqLat(["--pidnss", "--json"], tmp_path, "pidns")
        t.wait_header()
        time.sleep(1.0)
        assert t.stop() == 0
    keys = {h["pidns"] for h in t.histograms()}
    assert {ns, host} <= keys, (keys, ns, host)


def test_per_process_and_per_thread_keys(need_root: None, tmp_path: Path) -> None:
    """-P keys a histogram by tgid, -L by tid: a process with two busy threads (and a hog on
    their CPU, so they wait) gives one -P histogram under its tgid and its name, and -L
    histograms under each thread's tid."""
    cpu = max(os.sched_getaffinity(0))
    with Children() as kids:
        victim, ids = kids.threaded_victim(cpu, "rqlat_victim")
        tgid, tids = ids[0], ids[1:]
        victim.send_signal(signal.SIGSTOP)  # until both tracers are attached
        per_process = RunqLat(["-P", "-p", str(tgid), "--json"], tmp_path, "P")
        per_thread = RunqLat(["-L", "-p", str(tgid), "--json"], tmp_path, "L")
        per_process.wait_header()
        per_thread.wait_header()
        hog = kids.hog(cpu)
        victim.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        victim.send_signal(signal.SIGSTOP)  # no more waits: both tracers hold the same ones
        hog.kill()
        time.sleep(0.05)
        assert per_process.stop() == 0 and per_thread.stop() == 0
    (proc,) = per_process.histograms()
    assert proc["pid"] == tgid and proc["comm"] == "rqlat_victim", proc
    threads = {h["tid"]: h for h in per_thread.histograms()}
    assert set(tids) <= set(threads) <= {tgid, *tids}, (threads.keys(), ids)
    total = sum(h["count"] for h in threads.values())  # (the tracers stop a moment apart)
    assert abs(total - proc["count"]) <= 0.05 * proc["count"] + 5, (total, proc["count"])


@pytest.mark.parametrize("room, histograms", [(2, "2 histograms"), (1, "1 histogram")])
def test_full_map_counts_dropped_waits(need_root: None, tmp_path: Path, room: int,
                                       histograms: str) -> None:  # fmt: skip
    """With room for 2 histograms (--max-keys 2), -L on a busy system: at most 2 histograms,
    and the waits of every other thread are reported as dropped, not silently lost."""
    with Children() as kids:
        kids.hog(max(os.sched_getaffinity(0)))
        t = RunqLat(["-L", "--max-keys", str(room), "--json", "1", "1"], tmp_path, "full")
        assert t.proc.wait(timeout=patience(20)) == 0, t.err()
    assert len(t.histograms()) <= room
    dropped = re.findall(rf"^Dropped (\d+) (waits?): no room for more than {histograms} \(",
                         t.err(), re.M)  # fmt: skip
    assert dropped and sum(int(n) for n, _ in dropped) > 0, t.err()
    for n, noun in dropped:  # "1 wait", "2 waits"
        assert noun == ("wait" if n == "1" else "waits"), t.err()


def test_json_stdout_is_only_json_lines(need_root: None, tmp_path: Path) -> None:
    """``--json``: the "Tracing ..." line goes to stderr; every stdout line is one JSON
    object (so that ``| jq`` or a line-by-line reader never meets anything else)."""
    with Children() as kids:
        kids.hog(max(os.sched_getaffinity(0)))
        start = time.time_ns()
        t = RunqLat(["--json", "1", "2"], tmp_path, "json")
        assert t.proc.wait(timeout=patience(20)) == 0, t.err()
        end = time.time_ns()
    lines = t.out().splitlines()
    assert len(lines) == 2, t.out()
    stamps = []
    for line in lines:
        row = json.loads(line)
        assert isinstance(row, dict), line
        # "ts": epoch ns of the summary, within this test's window, beside "time"
        assert isinstance(row["ts"], int) and start < row["ts"] < end, (start, row, end)
        assert row["time"] == time.strftime("%H:%M:%S", time.localtime(row["ts"] // 10**9))
        stamps.append(row["ts"])
    assert stamps[0] < stamps[1], stamps
    assert t.err().startswith("Tracing run queue latency... Hit Ctrl-C to end.\n"), t.err()
