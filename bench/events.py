"""Event throughput at threshold 0: events/s delivered, events lost, the workload's switch
rate, and sched_switch ns/run (bpf_stats), pybpf vs the C runqslower.

Each round starts the tracer (output to a file, as a user redirecting it would), runs the
workload for a fixed time, stops the tracer with SIGINT and counts its rows and its
``Lost N events on CPU #k!`` lines.  The switch rate is the system's context switches per
second (``ctxt`` in /proc/stat) during the workload, plus stress-ng's own bogo ops/s.
Workloads: ``stress-ng --switch 2`` and ``hackbench -p -g 2 -f 20`` (Debian: rt-tests),
looped for the duration.  The C tool refuses ``0`` as a threshold; it runs with ``1``.

    .venv/bin/python bench/events.py [--seconds 5] [--rounds 3] [--compare-c]
        [--transport ringbuf|perf|auto] [--workload switch|hackbench|all] [--baseline]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pybpf.syscall import enable_stats, iter_prog_ids, prog_get_fd_by_id, prog_info

REPO = Path(__file__).resolve().parent.parent
LOST_RE = re.compile(r"Lost (\d+) events? on CPU #\d+!")
BOGO_RE = re.compile(r"switch\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)")


def ctxt() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    raise RuntimeError("no ctxt in /proc/stat")


def switch_stats(before_ids: set[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the new sched_switch program."""
    for prog_id in iter_prog_ids():
        if prog_id in before_ids:
            continue
        try:
            with prog_get_fd_by_id(prog_id) as fd:
                info = prog_info(fd.fileno())
        except OSError:
            continue
        if info.name == "sched_switch":
            return info.run_time_ns, info.run_cnt
    return 0, 0


def run_workload(workload: str, seconds: float) -> float:
    """Run the workload for ``seconds``; return stress-ng's bogo ops/s (0 for hackbench)."""
    if workload == "switch":
        out = subprocess.run(
            ["stress-ng", "--switch", "2", "--timeout", f"{seconds}s", "--metrics"],
            capture_output=True, text=True, check=True,
        ).stderr + ""  # fmt: skip
        m = BOGO_RE.search(out)
        return float(m.group(1)) if m else 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        subprocess.run(
            ["hackbench", "-p", "-g", "2", "-f", "20", "-l", "2000"],
            stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    return 0.0


def one_round(argv: list[str] | None, workload: str, seconds: float) -> dict[str, float]:
    before_ids = set(iter_prog_ids())
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp, "out"), Path(tmp, "err")
        proc = None
        if argv is not None:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                env = dict(os.environ, PYTHONPATH=str(REPO))
                proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
            deadline = time.monotonic() + 10
            while b"LAT(us)" not in out_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{argv[0]} did not start: {err_path.read_text()}")
                time.sleep(0.02)
        t0, c0 = switch_stats(before_ids)
        x0, w0 = ctxt(), time.monotonic()
        bogo = run_workload(workload, seconds)
        x1, w1 = ctxt(), time.monotonic()
        t1, c1 = switch_stats(before_ids)
        rows = lost = 0
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            rows = max(0, out_path.read_bytes().count(b"\n") - 2)
            lost = sum(int(n) for n in LOST_RE.findall(err_path.read_text()))
    wall = w1 - w0
    return {
        "events/s": rows / wall,
        "lost": lost,
        "ctxt/s": (x1 - x0) / wall,
        "bogo/s": bogo,
        "ns/run": (t1 - t0) / (c1 - c0) if c1 > c0 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-c", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also run with no tracer")
    parser.add_argument("--transport", default="auto", choices=("auto", "ringbuf", "perf"))
    parser.add_argument("--workload", default="all", choices=("switch", "hackbench", "all"))
    args = parser.parse_args()
    tools: dict[str, list[str] | None] = {}
    if args.baseline:
        tools["no tracer"] = None
    tools[f"pybpf ({args.transport})"] = [
        sys.executable, "-m", "pybpf", "run", "runqslower", "0", "--transport", args.transport
    ]  # fmt: skip
    if args.compare_c:
        tools["C runqslower"] = ["/usr/sbin/runqslower", "1"]
    workloads = ["switch", "hackbench"] if args.workload == "all" else [args.workload]
    print(f"{'workload':<10} {'tracer':<18} {'events/s':>10} {'lost':>8} {'ctxt/s':>10} "
          f"{'bogo/s':>10} {'ns/run':>8}   (medians of {args.rounds} x {args.seconds:g} s)")
    with enable_stats():
        for workload in workloads:
            for label, argv in tools.items():
                results = [one_round(argv, workload, args.seconds) for _ in range(args.rounds)]
                med = {k: statistics.median(r[k] for r in results) for k in results[0]}
                print(f"{workload:<10} {label:<18} {med['events/s']:>10.0f} {med['lost']:>8.0f} "
                      f"{med['ctxt/s']:>10.0f} {med['bogo/s']:>10.0f} {med['ns/run']:>8.0f}"
                      f"   lost per round: {[int(r['lost']) for r in results]}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
