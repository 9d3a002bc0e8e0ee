"""Helpers for the runqslower end-to-end tests: run the tool, make load, read the kernel.

Oracles used here are the kernel's own: /proc/<pid>/task/<tid>/schedstat, taskstats (via
pyroute2), /proc/<pid>/fdinfo, and bpftool's listings.  Nothing here imports pybpf.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
# Deadlines for a tool to start, print or stop scale with the machine: under an emulated CPU
# (the kernel matrix boots kernels under QEMU without KVM) everything is several times slower.
PATIENCE = float(os.environ.get("PYBPF_TEST_PATIENCE", "1"))


def patience(seconds: float) -> float:
    """``seconds`` scaled by PYBPF_TEST_PATIENCE (a deadline, never a measured quantity)."""
    return seconds * PATIENCE

HEADER_FMT = "Tracing run queue latency higher than {} us"
COLUMNS = f"{'TIME':<8} {'COMM':<16} {'TID':<6} {'LAT(us)':>14}"
COLUMNS_PREV = COLUMNS + f" {'PREV COMM':<16} {'PREV TID':<6}"
TIME_RE = re.compile(r"\d\d:\d\d:\d\d")

# A CPU hog pinned to one CPU.
HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"

# A victim pinned to one CPU: prints its pid, blocks on stdin until told to go, then
# alternates spinning (preempted by hogs) and short sleeps (woken, enqueued): it is
# enqueued often, both ways runqslower records (wakeup and involuntary switch).
VICTIM = """\
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
sys.stdout.write(f"{os.getpid()}\\n")
sys.stdout.flush()
sys.stdin.buffer.read(1)
while True:
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    time.sleep(0.0005)
"""

# A multi-threaded victim with a distinctive comm (set before the threads are created,
# so they inherit it); prints "tgid tid1 tid2 ..." and keeps spinning and sleeping.
THREADED_VICTIM = """\
import ctypes, os, sys, threading, time
os.sched_setaffinity(0, {int(sys.argv[1])})
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)  # PR_SET_NAME
tids = []
def work():
    tids.append(threading.get_native_id())
    while True:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        time.sleep(0.0005)
threads = [threading.Thread(target=work, daemon=True) for _ in range(2)]
for t in threads:
    t.start()
while len(tids) < len(threads):
    time.sleep(0.001)
sys.stdout.write(" ".join(map(str, [os.getpid()] + tids)) + "\\n")
sys.stdout.flush()
work()
"""


# runqlat's workload.  A spinner pinned to one CPU: prints its pid, then never sleeps.
SPINNER = """\
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
sys.stdout.write(f"{os.getpid()}\\n")
sys.stdout.flush()
while True:
    pass
"""

# A SCHED_FIFO hog pinned to one CPU: every SLEEP s it wakes (preempting a spinner there at
# once) and spins for the next of SPINS ms; after SECONDS it prints how many times it spun.
# argv: CPU SPINS(ms, comma-separated) SECONDS SLEEP
FIFO_HOG = """\
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
spins = [int(ms) / 1000 for ms in sys.argv[2].split(",")]
end = time.monotonic() + float(sys.argv[3])
cycles = 0
while time.monotonic() < end:
    time.sleep(float(sys.argv[4]))
    stop = time.perf_counter() + spins[cycles % len(spins)]
    cycles += 1
    while time.perf_counter() < stop:
        pass
sys.stdout.write(f"{cycles}\\n")
"""


def _child_signals() -> None:
    # A shell that ran us in the background may have left SIGINT ignored; Python would
    # then keep ignoring it (the case is tested on its own, with _sigint_ignored).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_ignored() -> None:
    """What sh does for ``cmd &`` without job control."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def tool_env() -> dict:
    """The environment of the tool: pybpf from this tree; stdout buffering left to the tool
    (its flushing at exit is under test)."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + extra if extra else "")
    return env


class PybpfProcess:
    """``python -m pybpf ARGS`` with stderr (and stdout unless given) in files under
    ``tmp_path``; ``wait_for(text)`` polls a file until the tool has printed ``text``."""

    def __init__(self, args: list[str], tmp_path: Path, name: str, stdout: Any = None) -> None:
        self.args = args
        self.path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pybpf", *args], cwd=REPO, env=tool_env(),
                stdin=subprocess.DEVNULL, stdout=out if stdout is None else stdout, stderr=err,
                preexec_fn=_child_signals,
            )  # fmt: skip

    def out(self) -> str:
        return self.path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str, in_stderr: bool = False, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + patience(timeout)
        while text not in (self.err() if in_stderr else self.out()):
            rc = self.proc.poll()
            assert rc is None, f"pybpf {self.args} exited {rc}: {self.err()}"
            assert time.monotonic() < deadline, f"pybpf {self.args}: no {text!r}: {self.err()}"
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=patience(15))


def last_cpu() -> int:
    return max(os.sched_getaffinity(0))


class Children:
    """Every child process we start; all killed and reaped on exit (hogs included)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=patience(10))
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()

    def add(self, p: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(p)
        return p

    def hog(self, cpu: int) -> subprocess.Popen:
        return self.add(
            subprocess.Popen([sys.executable, "-S", "-c", HOG, str(cpu)], stdin=subprocess.DEVNULL)
        )

    def victim(self, cpu: int) -> tuple[subprocess.Popen, int]:
        """The single-threaded victim, blocked on stdin: call go() to start it."""
        p = self.add(
            subprocess.Popen(
                [sys.executable, "-S", "-c", VICTIM, str(cpu)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
        pid = int(p.stdout.readline())
        assert pid == p.pid
        wait_state(pid, "S")
        return p, pid

    def threaded_victim(self, cpu: int, comm: str) -> tuple[subprocess.Popen, list[int]]:
        """[tgid, tid, tid] of a running multi-threaded victim named ``comm``."""
        p = self.add(
            subprocess.Popen(
                [sys.executable, "-S", "-c", THREADED_VICTIM, str(cpu), comm],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
        )
        ids = [int(x) for x in p.stdout.readline().split()]
        assert ids and ids[0] == p.pid, ids
        return p, ids

    def tracer(
        self, args: list[str], tmp_path: Path, name: str = "rq", sigint_ignored: bool = False
    ) -> Tracer:
        t = Tracer(args, tmp_path, name, sigint_ignored)
        self.add(t.proc)
        return t


def go(victim: subprocess.Popen) -> None:
    victim.stdin.write(b"g")
    victim.stdin.flush()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, states: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + patience(timeout)
    while proc_state(pid) not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} not in state {states!r}: {proc_state(pid)!r}")
        time.sleep(0.005)


def stop_victim(victim: subprocess.Popen) -> None:
    """SIGSTOP and wait until it is stopped (no more run-queue waits from it)."""
    victim.send_signal(signal.SIGSTOP)
    wait_state(victim.pid, "T")
    time.sleep(0.1)


def schedstat(tid: int, pid: Optional[int] = None) -> tuple[int, int, int]:
    """(ns on CPU, ns waited on a run queue, timeslices) of one thread."""
    with open(f"/proc/{pid or tid}/task/{tid}/schedstat") as f:
        run, delay, slices = (int(x) for x in f.read().split())
    return run, delay, slices


# The tool under test: PYBPF_RUNQSLOWER=runqslower_lang runs the same tests against the
# version whose BPF side is written in the Python language.
TOOL = os.environ.get("PYBPF_RUNQSLOWER", "runqslower")


class Tracer:
    """``python -m pybpf run runqslower ARGS`` with stdout and stderr in files."""

    def __init__(
        self, args: list[str], tmp_path: Path, name: str, sigint_ignored: bool = False
    ) -> None:
        self.args = args
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pybpf", "run", TOOL, *args],
                cwd=REPO,
                env=tool_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=_sigint_ignored if sigint_ignored else _child_signals,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def _alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise AssertionError(
                f"runqslower {self.args} exited early with {rc}: stderr: {self.err()!r}"
            )

    def wait_header(self, timeout: float = 10.0) -> list[str]:
        """Wait until both header lines are in the output file (printed after attach)."""
        deadline = time.monotonic() + patience(timeout)
        while True:
            lines = self.out().split("\n")
            if len(lines) >= 3:
                return lines[:2]
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"no header after {timeout} s: {self.out()!r}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """--json prints no header: wait until the process holds 3 BPF links and an epoll
        fd watching its event buffers (what the header would have told)."""
        deadline = time.monotonic() + patience(timeout)
        while True:
            fds = owned_fds(self.pid)
            watched = sum(info.count("tfd:") for kind, info in fds if kind == "[eventpoll]")
            links = sum(1 for kind, _ in fds if kind == "bpf_link")
            if links >= 3 and watched >= 1:
                time.sleep(0.3)  # let the reader finish setting up every CPU's ring
                return
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"tracer not ready after {timeout} s: {self.err()!r}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=patience(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"runqslower did not exit within {timeout} s of signal {sig}"
            ) from None

    def rows(self, previous: bool = False) -> list[dict]:
        text = self.out()
        assert text.endswith("\n"), f"output does not end with a complete line: {text[-200:]!r}"
        return [parse_row(line, previous) for line in text.split("\n")[2:-1]]

    def json_rows(self) -> list[dict]:
        text = self.out()
        assert text == "" or text.endswith("\n"), f"incomplete last line: {text[-200:]!r}"
        return [json.loads(line) for line in text.splitlines()]


def parse_row(line: str, previous: bool = False) -> dict:
    """One row of ``%-8s %-16s %-6s %14s`` (+ `` %-16s %-6s`` with -P), checked column by
    column (a TID wider than 6 digits pushes the rest right, as printf does)."""
    bad = f"malformed row: {line!r}"
    assert TIME_RE.fullmatch(line[:8]) and line[8] == " ", bad
    comm = line[9:25]
    assert len(comm) == 16 and line[25] == " ", bad
    rest = line[26:]
    tid_s = rest.split(" ", 1)[0]
    w = max(6, len(tid_s))
    assert tid_s.isdigit() and rest[:w] == tid_s.ljust(w) and rest[w] == " ", bad
    rest = rest[w + 1 :]
    lat_s = rest[:14] if previous else rest
    assert lat_s.strip().isdigit() and lat_s == lat_s.strip().rjust(14), bad
    row = {"time": line[:8], "comm": comm.rstrip(), "tid": int(tid_s), "lat_us": int(lat_s)}
    if previous:
        rest = rest[14:]
        assert rest[:1] == " " and rest[17:18] == " ", bad
        row["prev_comm"] = rest[1:17].rstrip()
        prev_s = rest[18:]
        assert prev_s.rstrip().isdigit() and prev_s == prev_s.rstrip().ljust(6), bad
        row["prev_tid"] = int(prev_s)
    return row


# --- BPF objects in the kernel --------------------------------------------------------


def owned_fds(pid: int) -> list[tuple[str, str]]:
    """(kind, fdinfo) of each anon-inode fd of a process: bpf-prog, bpf-map, bpf_link, ..."""
    found = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return []
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        if target.startswith("anon_inode:"):
            found.append((target[len("anon_inode:") :], info))
    return found


def _field(info: str, name: str) -> Optional[int]:
    m = re.search(rf"^{name}:\s*(\d+)$", info, re.M)
    return int(m.group(1)) if m else None


def owned_bpf_ids(pid: int) -> dict[str, set[int]]:
    """Program, map and link ids whose fds the process holds (from /proc/PID/fdinfo)."""
    ids: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    for kind, info in owned_fds(pid):
        if kind == "bpf_link":
            ids["link"].add(_field(info, "link_id"))
        elif kind == "bpf-prog":
            ids["prog"].add(_field(info, "prog_id"))
        elif kind == "bpf-map":
            ids["map"].add(_field(info, "map_id"))
    return ids


def bpftool_path() -> str:
    path = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), None
    )
    assert path, "bpftool is needed as the oracle for BPF object listings"
    return path


def bpftool_show(what: str) -> list[dict]:
    """``bpftool <prog|map|link> show -j``."""
    out = subprocess.run(
        [bpftool_path(), what, "show", "-j"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return json.loads(out) if out.strip() else []


def kernel_ids() -> dict[str, dict[int, dict]]:
    return {what: {o["id"]: o for o in bpftool_show(what)} for what in ("prog", "map", "link")}


def wait_gone(ids: dict[str, set[int]], timeout: float = 3.0) -> dict[str, set[int]]:
    """Poll until none of ``ids`` exists (the kernel frees programs after an RCU grace
    period); return what still exists at the deadline."""
    deadline = time.monotonic() + patience(timeout)
    while True:
        now = kernel_ids()
        left = {k: ids[k] & set(now[k]) for k in ids}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def assert_gone(ours: dict[str, set[int]], timeout: float = 5.0) -> None:
    """The programs, maps and links a tool held (non-empty each) are all gone."""
    assert ours["prog"] and ours["map"] and ours["link"], ours
    left = wait_gone(ours, timeout)
    assert not any(left.values()), f"left in the kernel: {left}"


# --- taskstats (delay accounting) ----------------------------------------------------


def taskstats_cpu_delay(tid: int) -> tuple[int, int]:
    """(cpu_delay_total ns, cpu_count) of one thread, from the kernel's taskstats."""
    from pyroute2 import TaskStats

    ts = TaskStats()
    try:
        ts.bind()
        (msg,) = ts.get_pid_stat(tid)
        aggr = msg.get_attr("TASKSTATS_TYPE_AGGR_PID")
        assert aggr is not None, f"no taskstats for tid {tid}: {msg}"
        stats = aggr.get_attr("TASKSTATS_TYPE_STATS")
        assert stats is not None, f"no taskstats for tid {tid}: {msg}"
    finally:
        ts.close()
    return stats["cpu_delay_total"], stats["cpu_count"]


OUR_MAP_NAMES = ("start", "events", ".rodata")


def leaked_since(before: dict[str, dict[int, dict]], timeout: float = 3.0) -> dict[int, str]:
    """Objects a failed run may have left: maps with our names created since ``before``
    that no program uses, and new programs with our names that no link attaches.  Other
    users' complete, running tools are not counted; their transient objects are waited
    out (up to ``timeout``)."""
    deadline = time.monotonic() + patience(timeout)
    while True:
        now = kernel_ids()
        used = {m for p in now["prog"].values() for m in p.get("map_ids", [])}
        linked = {link.get("prog_id") for link in now["link"].values()}
        leaked = {
            i: f"map {m['name']}"
            for i, m in now["map"].items()
            if i not in before["map"] and i not in used and m.get("name") in OUR_MAP_NAMES
        }
        leaked.update(
            (i, f"prog {p['name']}")
            for i, p in now["prog"].items()
            if i not in before["prog"] and i not in linked
            and p.get("name", "").startswith(("sched_wakeup", "sched_switch"))
        )  # fmt: skip
        if not leaked or time.monotonic() > deadline:
            return leaked
        time.sleep(0.1)
