"""In-kernel cost of runqslower's handlers, in ns per run, from bpf_stats.

Starts the tracer at a threshold no event reaches (so handlers run without
output), drives context switches with `stress-ng --switch`, and reads each
program's run_time_ns / run_cnt (BPF_ENABLE_STATS, Linux 5.8) before and
after.  With --compare-c it measures libbpf-tools' C runqslower the same way
(Debian package libbpf-tools, /usr/sbin/runqslower).

    .venv/bin/python bench/handler_cost.py [--seconds 5] [--rounds 5] [--compare-c] [--lang]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time

from pybpf.syscall import enable_stats, iter_prog_ids, prog_get_fd_by_id, prog_info

NAMES = ("sched_wakeup", "sched_wakeup_ne", "sched_wakeup_new", "sched_switch")


def snapshot(pids_before: set[int]) -> dict[str, tuple[int, int]]:
    out = {}
    for prog_id in iter_prog_ids():
        if prog_id in pids_before:
            continue
        with prog_get_fd_by_id(prog_id) as fd:
            info = prog_info(fd.fileno())
        if info.name in NAMES:
            out[info.name] = (info.run_time_ns, info.run_cnt)
    return out


def measure(argv: list[str], seconds: float) -> dict[str, float]:
    before_ids = set(iter_prog_ids())
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        while b"LAT(us)" not in proc.stdout.readline():
            if proc.poll() is not None:
                raise SystemExit(f"{argv[0]} exited early")
        start = snapshot(before_ids)
        subprocess.run(
            ["stress-ng", "--switch", "2", "--timeout", f"{seconds}s", "--quiet"], check=True
        )
        end = snapshot(before_ids)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    result = {}
    for name, (t1, c1) in end.items():
        t0, c0 = start.get(name, (0, 0))
        if c1 > c0:
            result[name] = (t1 - t0) / (c1 - c0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-c", action="store_true")
    parser.add_argument("--lang", action="store_true",
                        help="also runqslower_lang, its handlers written in pybpf.lang")
    args = parser.parse_args()
    tools = {"pybpf": [sys.executable, "-m", "pybpf", "run", "runqslower", "1000000000"]}
    if args.lang:
        tools["pybpf lang"] = [sys.executable, "-m", "pybpf", "run", "runqslower_lang",
                               "1000000000"]
    if args.compare_c:
        # stdbuf: the C tool block-buffers its header when stdout is a pipe.
        tools["C (libbpf-tools)"] = ["stdbuf", "-oL", "/usr/sbin/runqslower", "1000000000"]
    with enable_stats():
        for label, argv in tools.items():
            rounds: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for name, ns in measure(argv, args.seconds).items():
                    rounds.setdefault(name, []).append(ns)
                time.sleep(0.5)
            for name, values in sorted(rounds.items()):
                print(f"{label:<18} {name:<18} median {statistics.median(values):7.0f} ns/run "
                      f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
