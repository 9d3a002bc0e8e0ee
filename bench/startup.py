"""Exec -> header time and peak RSS of `python -m pybpf run runqslower`.

The header is printed after every program is loaded and attached, so the
time to the header is the time until tracing is live.  Prints the median of
N runs (default 15) and each run's peak RSS (from wait4's rusage).

    .venv/bin/python bench/startup.py [N] [--compare-c] [-- extra runqslower args]

With --compare-c, libbpf-tools' C runqslower (/usr/sbin/runqslower, Debian
package libbpf-tools) is measured the same way.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time


def one_run(argv: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("tool exited before its header: " + proc.stderr.read().decode())
        if b"LAT(us)" in line:
            break
    elapsed = time.perf_counter() - start
    proc.send_signal(signal.SIGINT)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    return elapsed * 1000, usage.ru_maxrss / 1024


def main() -> None:
    args = sys.argv[1:]
    runs = int(args.pop(0)) if args and args[0].isdigit() else 15
    compare_c = "--compare-c" in args
    args = [a for a in args if a != "--compare-c"]
    extra = args[1:] if args[:1] == ["--"] else args
    commands = {"pybpf": [sys.executable, "-m", "pybpf", "run", "runqslower", "1000000", *extra]}
    if compare_c:
        # stdbuf: the C tool block-buffers its header when stdout is a pipe.
        commands["C"] = ["stdbuf", "-oL", "/usr/sbin/runqslower", "1000000", *extra]
    for label, argv in commands.items():
        one_run(argv)  # warm the page cache
        results = [one_run(argv) for _ in range(runs)]
        times = sorted(t for t, _ in results)
        rss = sorted(r for _, r in results)
        print(f"{label}: runs {runs}; exec -> header median {statistics.median(times):.1f} ms "
              f"(min {times[0]:.1f}, max {times[-1]:.1f}); peak RSS median "
              f"{statistics.median(rss):.1f} MiB (max {rss[-1]:.1f})")


if __name__ == "__main__":
    main()
