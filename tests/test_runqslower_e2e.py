"""runqslower end to end: the real tool, real kernel, real load, and the kernel's own
accounting (schedstat, taskstats, fdinfo, bpftool) as oracles.

Every test runs ``python -m pybpf run runqslower`` as a subprocess with its output in a
file (a full pipe would stall the reader), waits for the header (printed after attach),
creates load with pinned CPU hogs, and kills every child in the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers_rq import (
    COLUMNS,
    COLUMNS_PREV,
    HEADER_FMT,
    TIME_RE,
    Children,
    go,
    kernel_ids,
    last_cpu,
    leaked_since,
    owned_bpf_ids,
    patience,
    schedstat,
    stop_victim,
    taskstats_cpu_delay,
    tool_env,
    wait_gone,
)

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]


OUR_PROGRAMS = {"sched_wakeup", "sched_switch"}
WAKEUP_NEW = ("sched_wakeup_new", "sched_wakeup_ne")  # full name, or cut at 15 bytes


def test_rows_under_cpu_load(tmp_path):
    """--min-us 200 under 3 hogs + a victim on one CPU: rows, all above 200 us."""
    with Children() as kids:
        rq = kids.tracer(["--min-us", "200"], tmp_path)
        header = rq.wait_header()
        cpu = min(os.sched_getaffinity(0))
        for _ in range(3):
            kids.hog(cpu)
        victim, _ = kids.victim(cpu)
        go(victim)
        time.sleep(2.5)
        rc = rq.stop(signal.SIGINT)
        assert rc == 0, rq.err()
        assert header == [HEADER_FMT.format(200), COLUMNS]
        rows = rq.rows()
        assert rows, "no row under CPU load"
        assert all(r["lat_us"] > 200 for r in rows), [r for r in rows if r["lat_us"] <= 200]
        assert "Traceback" not in rq.err()
        print(f"\n{len(rows)} rows > 200 us, max {max(r['lat_us'] for r in rows)} us")


@pytest.fixture
def delayacct():
    path = "/proc/sys/kernel/task_delayacct"
    if not os.path.exists(path):  # before 5.14 delay accounting is on unless booted off
        yield
        return
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def _measure_victim(kids, tmp_path, stop_sig, seconds=4.0):
    """A victim sharing a CPU with 2 hogs, traced with ``-t VICTIM 0 --json``; the
    victim starts only after the tracer is ready and is stopped before the end reading,
    so every one of its waits lies inside the window.  Returns the figures."""
    cpu = last_cpu()
    kids.hog(cpu)
    kids.hog(cpu)
    victim, tid = kids.victim(cpu)
    rq = kids.tracer(["-t", str(tid), "0", "--json"], tmp_path)
    rq.wait_ready()
    _, delay0, slices0 = schedstat(tid)
    ts_delay0, ts_count0 = taskstats_cpu_delay(tid)
    go(victim)
    time.sleep(seconds)
    stop_victim(victim)
    _, delay1, slices1 = schedstat(tid)
    ts_delay1, ts_count1 = taskstats_cpu_delay(tid)
    rc = rq.stop(stop_sig)
    assert rc == 0, rq.err()
    assert "Traceback" not in rq.err() and "Lost" not in rq.err(), rq.err()
    rows = rq.json_rows()
    assert {r["tid"] for r in rows} <= {tid}, "rows of another thread with -t"
    return {
        "events": len(rows),
        "sum_us": sum(r["lat_us"] for r in rows),
        "schedstat_us": (delay1 - delay0) / 1000,
        "taskstats_us": (ts_delay1 - ts_delay0) / 1000,
        "slices": slices1 - slices0,
        "ts_count": ts_count1 - ts_count0,
    }


def _check_accuracy(m, label):
    print(
        f"\n[{label}] events={m['events']} (schedstat timeslices {m['slices']}, "
        f"taskstats cpu_count {m['ts_count']})\n"
        f"[{label}] sum lat_us={m['sum_us']:.0f}  schedstat run_delay growth="
        f"{m['schedstat_us']:.0f} us (ratio {m['sum_us'] / max(m['schedstat_us'], 1):.4f})  "
        f"taskstats cpu_delay_total growth={m['taskstats_us']:.0f} us "
        f"(ratio {m['sum_us'] / max(m['taskstats_us'], 1):.4f})"
    )
    assert m["schedstat_us"] > 100_000, f"too little run-queue wait to compare: {m}"
    assert m["events"] > 0
    # One event per switch-in after a wait: the kernel counts the same timeslices.
    assert abs(m["events"] - m["slices"]) <= 0.10 * m["slices"], m
    assert abs(m["sum_us"] - m["schedstat_us"]) <= 0.10 * m["schedstat_us"], m
    assert abs(m["sum_us"] - m["taskstats_us"]) <= 0.10 * m["taskstats_us"], m


def test_accuracy_vs_schedstat_and_taskstats(tmp_path, delayacct):
    """Sum of the victim's lat_us == growth of its run_delay (schedstat, taskstats) +-10%."""
    with Children() as kids:
        m = _measure_victim(kids, tmp_path, signal.SIGINT)
    _check_accuracy(m, "SIGINT")


def test_filters(tmp_path):
    """-p TGID, -t TID, -c COMM with threshold 0, three tracers side by side."""
    cpu = last_cpu()
    comm = "pyrqsvictim"
    with Children() as kids:
        kids.hog(cpu)
        kids.hog(cpu)
        victim, ids = kids.threaded_victim(cpu, comm)
        tgid, tid = ids[0], ids[1]
        assert tid != tgid
        by_pid = kids.tracer(["-p", str(tgid), "0"], tmp_path, "by_pid")
        by_tid = kids.tracer(["-t", str(tid), "0"], tmp_path, "by_tid")
        by_comm = kids.tracer(["-c", comm[:8], "0"], tmp_path, "by_comm")
        for rq in (by_pid, by_tid, by_comm):
            assert rq.wait_header() == [HEADER_FMT.format(0), COLUMNS]
        time.sleep(2.0)
        tasks = {int(t) for t in os.listdir(f"/proc/{tgid}/task")}
        for rq in (by_pid, by_tid, by_comm):
            assert rq.stop(signal.SIGINT) == 0, rq.err()
        pid_rows, tid_rows, comm_rows = by_pid.rows(), by_tid.rows(), by_comm.rows()

    assert pid_rows, "-p: no row for a busy process"
    assert {r["tid"] for r in pid_rows} <= tasks, "-p: rows of threads of another process"
    assert len({r["tid"] for r in pid_rows}) >= 2, "-p: should report all the process' threads"
    assert tid_rows, "-t: no row for a busy thread"
    assert {r["tid"] for r in tid_rows} == {tid}
    assert comm_rows, "-c: no row"
    assert all(r["comm"].startswith(comm[:8]) for r in comm_rows), "-c: other comms"
    assert {r["tid"] for r in comm_rows} & tasks, "-c: the victim was not reported"
    print(f"\n-p: {len(pid_rows)} rows, -t: {len(tid_rows)}, -c: {len(comm_rows)}")


def test_previous_and_json(tmp_path):
    """-P adds PREV COMM and PREV TID; --json (with and without -P) has the documented keys."""
    start = time.time_ns()
    with Children() as kids:
        prev = kids.tracer(["-P", "--min-us", "50"], tmp_path, "prev")
        js = kids.tracer(["--json", "--min-us", "50"], tmp_path, "json")
        js_prev = kids.tracer(["--json", "-P", "--min-us", "50"], tmp_path, "json_prev")
        assert prev.wait_header() == [HEADER_FMT.format(50), COLUMNS_PREV]
        js.wait_ready()
        js_prev.wait_ready()
        for cpu in sorted(os.sched_getaffinity(0)):
            kids.hog(cpu)
            kids.hog(cpu)
        time.sleep(2.0)
        for rq in (prev, js, js_prev):
            assert rq.stop(signal.SIGINT) == 0, rq.err()
        prev_rows = prev.rows(previous=True)
        json_rows = js.json_rows()
        json_prev_rows = js_prev.json_rows()
    end = time.time_ns()

    assert prev_rows and json_rows and json_prev_rows
    assert all(r["lat_us"] > 50 for r in prev_rows)
    assert any(r["prev_tid"] > 0 for r in prev_rows)
    for rows, keys in (
        (json_rows, {"time", "ts", "comm", "tid", "lat_us"}),
        (json_prev_rows, {"time", "ts", "comm", "tid", "lat_us", "prev_comm", "prev_tid"}),
    ):
        for r in rows:
            assert set(r) - {"comm_raw", "prev_comm_raw"} == keys, r
            assert TIME_RE.fullmatch(r["time"]) and isinstance(r["comm"], str), r
            # "ts": epoch ns when the row was read, within the test's window, as "time" says
            assert isinstance(r["ts"], int) and start < r["ts"] < end, (start, r, end)
            assert r["time"] == time.strftime("%H:%M:%S", time.localtime(r["ts"] // 10**9)), r
            assert isinstance(r["tid"], int) and isinstance(r["lat_us"], int), r
            assert r["lat_us"] > 50, r
            if "prev_tid" in r:
                assert isinstance(r["prev_tid"], int) and isinstance(r["prev_comm"], str), r


def _check_attached(pid, during):
    """Our programs, maps and links exist while the tool runs (fdinfo ids vs bpftool)."""
    ours = owned_bpf_ids(pid)
    progs = {during["prog"][i]["name"] for i in ours["prog"] if i in during["prog"]}
    assert OUR_PROGRAMS <= progs and any(n in progs for n in WAKEUP_NEW), progs
    assert len(ours["prog"]) == 3, ours
    assert all(during["prog"][i]["type"] == "tracing" for i in ours["prog"])
    linked = {during["link"][i]["prog_id"] for i in ours["link"] if i in during["link"]}
    assert linked == ours["prog"], f"programs not attached through links: {ours}"
    maps = {during["map"][i]["name"] for i in ours["map"] if i in during["map"]}
    assert {"start", "events"} <= maps, maps
    return ours


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)
def test_teardown(tmp_path, sig):
    """Programs, maps and links exist while running and are all gone after the signal;
    SIGINT/SIGTERM exit 0 with the output ending in a complete line.  Besides the ids
    the tool held, no program, map or link created since the start may remain: bpftool
    enumerates them with BPF_*_GET_NEXT_ID (CI runs nothing else that loads BPF)."""
    before = kernel_ids()
    with Children() as kids:
        rq = kids.tracer(["0"], tmp_path)
        rq.wait_header()
        kids.hog(last_cpu())
        kids.hog(last_cpu())
        time.sleep(1.0)
        ours = _check_attached(rq.pid, kernel_ids())
        rc = rq.stop(sig)
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL
        else:
            assert rc == 0, rq.err()
            assert "Traceback" not in rq.err()
            assert len(rq.rows()) > 0  # every line complete and well-formed
    left = wait_gone(ours)
    assert not any(left.values()), f"left in the kernel after {sig!r}: {left}"
    deadline = time.monotonic() + patience(3)
    while True:
        now = kernel_ids()
        new = {k: set(now[k]) - set(before[k]) for k in now}
        if not any(new.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not any(new.values()), f"new objects left after {sig!r}: {new}"


def test_sigint_when_started_with_sigint_ignored(tmp_path):
    """A non-interactive shell starts background jobs (``cmd &``) with SIGINT ignored;
    libbpf-tools' runqslower installs its own SIGINT handler (``signal(SIGINT, sig_int)``)
    so ``kill -INT`` still stops it cleanly.  pybpf must too: exit 0, output flushed."""
    with Children() as kids:
        rq = kids.tracer(["0"], tmp_path, sigint_ignored=True)
        rq.wait_header()
        time.sleep(0.5)
        rq.proc.send_signal(signal.SIGINT)
        try:
            rc = rq.proc.wait(timeout=patience(5))
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0, (
            "runqslower started with SIGINT ignored (as `cmd &` in a script does) "
            f"did not stop on SIGINT within 5 s (exit status {rc})"
        )
        assert len(rq.rows()) > 0


def test_sigterm_flushes_every_event(tmp_path, delayacct):
    """SIGTERM (not only Ctrl-C) flushes every received row: the accuracy check holds."""
    with Children() as kids:
        m = _measure_victim(kids, tmp_path, signal.SIGTERM, seconds=2.0)
    _check_accuracy(m, "SIGTERM")


BAD_PROGRAM = """
from pybpf.asm import R0, R1, R2, Asm
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool
from pybpf.uapi import BPF_MAP_TYPE_HASH


class Bad(Tool):
    description = "reads through an uninitialised register: the verifier must refuse"

    def build(self, args):
        a = Asm()
        a.ld_map_fd(R1, "counts")  # the map exists before the program is refused
        a.ldx(R0, R2, 0, size=8)
        a.mov(R0, 0).exit()
        return ObjectSpec("bad", [ProgramSpec("bad", "tp_btf/sched_switch", a.assemble())],
                          maps=[MapSpec("counts", BPF_MAP_TYPE_HASH, 4, 8, 16)])


TOOL = Bad()
"""


def test_no_leak_after_load_error(tmp_path):
    """A verifier rejection after the maps exist exits with one error line plus the
    relevant log lines, and leaves no map or program behind."""
    bad = tmp_path / "bad_prog.py"
    bad.write_text(BAD_PROGRAM)
    before = kernel_ids()
    out = subprocess.run(
        [sys.executable, "-m", "pybpf", "run", str(bad)], capture_output=True, text=True,
        timeout=patience(30), env=tool_env(), cwd=tmp_path,
    )  # fmt: skip
    err = out.stderr
    assert out.returncode != 0 and err.startswith("pybpf: error:") and "Traceback" not in err
    assert "R2 !read_ok" in err, err  # the verifier's own words, not just "EACCES"
    leaked = leaked_since(before)
    assert not leaked, f"objects left after a load error: {leaked}"
    new = {k: set(v) - set(before[k]) for k, v in kernel_ids().items()}
    assert not new["map"] and not new["prog"], new


def test_btf_of_another_kernel_is_refused_for_run(tmp_path):
    """`run --btf` names the running kernel's BTF (for kernels without /sys/kernel/btf);
    another kernel's would relocate wrong offsets: one clear error, nothing loaded."""
    with Children() as kids:
        rq = kids.tracer(["--btf", "btf/debian-5.10.0-46-amd64.btf.xz"], tmp_path)
        rc = rq.proc.wait(timeout=patience(30))
    err = rq.err()
    assert rc == 1 and err.startswith("pybpf: error:") and "Traceback" not in err, err
    assert "not the running kernel's BTF" in err


INTERRUPTED_AT_HEADER = """
import os
import signal

from pybpf.asm import R0, Asm
from pybpf.object import ObjectSpec, ProgramSpec
from pybpf.tool import Tool


class Early(Tool):
    description = "stopped by a SIGINT that arrives while its header is printed"

    def build(self, args):
        a = Asm()
        a.mov(R0, 0).exit()
        return ObjectSpec("early", [ProgramSpec("early", "tp_btf/sched_switch", a.assemble())])

    def header(self, args, out):
        out.write("HEADER\\n")
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode, still in here


TOOL = Early()
"""


def test_sigint_during_the_header_is_a_normal_stop(tmp_path):
    """Tracing is live once the header is out: a Ctrl-C that lands while it is printed
    stops the tool like any later one (exit 0, nothing left), not with a traceback or 130."""
    prog = tmp_path / "early.py"
    prog.write_text(INTERRUPTED_AT_HEADER)
    before = kernel_ids()
    out = subprocess.run([sys.executable, "-m", "pybpf", "run", str(prog)], capture_output=True,
                         text=True, timeout=30, env=tool_env(), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout == "HEADER\n" and "Traceback" not in out.stderr
    assert not leaked_since(before)
