"""Soak: `pybpf run runqslower 0` for minutes under `stress-ng --switch`, watched from outside.

Threshold 0 reports every context switch.  The tracer's stdout is a pipe this script drains
(counting rows, not storing them); its stderr is kept for ``Lost N events on CPU #k!`` lines.
Every ``--every`` seconds the script samples the tracer's RSS (``VmRSS`` in
``/proc/PID/status``) and its open fds (``/proc/PID/fd``).  At the end (SIGINT) it reports:

- lost events (the sum of the ``Lost`` lines; the goal is 0),
- rows delivered and rows per second,
- RSS over time and its spread after the first minute (goal: within 5 %),
- open fds over time (goal: no growth).

    python bench/soak.py [--seconds 600] [--every 10] [--workers 2] [--transport ringbuf]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

LOST_RE = re.compile(rb"Lost (\d+) events on CPU #\d+!")


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Drain(threading.Thread):
    """Reads a pipe to its end: counts newlines, optionally keeps the bytes."""

    def __init__(self, fd: int, keep: bool) -> None:
        super().__init__(daemon=True)
        self.fd, self.keep = fd, keep
        self.lines = 0
        self.data = bytearray()

    def run(self) -> None:
        while True:
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return
            self.lines += chunk.count(b"\n")
            if self.keep:
                self.data += chunk


def ctxt() -> int:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("ctxt "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--every", type=float, default=10, help="sampling period (s)")
    ap.add_argument("--workers", type=int, default=2, help="stress-ng --switch N")
    ap.add_argument("--transport", default="auto", choices=("auto", "ringbuf", "perf"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()

    tracer = subprocess.Popen(
        [args.python, "-m", "pybpf", "run", "runqslower", "0", "--transport", args.transport],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tracer.stdout is not None and tracer.stderr is not None
    out = Drain(tracer.stdout.fileno(), keep=False)
    err = Drain(tracer.stderr.fileno(), keep=True)
    out.start()
    err.start()
    deadline = time.monotonic() + 30
    while out.lines < 2:  # the header: tracing is live
        if tracer.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("tracer did not start: " + bytes(err.data).decode(errors="replace"))
        time.sleep(0.05)
    stress = subprocess.Popen(
        ["stress-ng", "--switch", str(args.workers), "--timeout", f"{int(args.seconds)}s",
         "--quiet"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    start = time.monotonic()
    c0 = ctxt()
    samples: list[tuple[float, int, int, int]] = []  # (t, rss KiB, fds, rows)
    print(f"{'t (s)':>6} {'RSS (KiB)':>10} {'fds':>4} {'rows':>12} {'rows/s':>9} {'lost':>6}",
          flush=True)
    last_t, last_rows = 0.0, out.lines
    try:
        while True:
            t = time.monotonic() - start
            rss, fds, rows = vm_rss_kib(tracer.pid), fd_count(tracer.pid), out.lines
            lost = sum(int(n) for n in LOST_RE.findall(bytes(err.data)))
            samples.append((t, rss, fds, rows))
            rate = (rows - last_rows) / (t - last_t) if t > last_t else 0.0
            print(f"{t:6.0f} {rss:10d} {fds:4d} {rows:12d} {rate:9.0f} {lost:6d}", flush=True)
            last_t, last_rows = t, rows
            if stress.poll() is not None or t >= args.seconds:
                break
            time.sleep(max(0.0, args.every - (time.monotonic() - start - t)))
    finally:
        stress.wait()
        elapsed = time.monotonic() - start
        switches = ctxt() - c0
        time.sleep(0.3)
        tracer.send_signal(signal.SIGINT)
        status = tracer.wait(30)
        out.join(10)
        err.join(10)
    lost = sum(int(n) for n in LOST_RE.findall(bytes(err.data)))
    rows = out.lines - 2  # minus the two header lines
    steady = [s for s in samples if s[0] >= 60] or samples
    rss = [s[1] for s in steady]
    fds = [s[2] for s in samples]
    spread = (max(rss) - min(rss)) / min(rss) * 100
    print()
    print(f"tracer exit status {status}; {elapsed:.0f} s under stress-ng --switch {args.workers}")
    print(f"rows {rows:,} ({rows / elapsed:,.0f}/s); system context switches "
          f"{switches / elapsed:,.0f}/s; lost {lost}")
    print(f"RSS after the first minute: min {min(rss)} KiB, max {max(rss)} KiB, spread "
          f"{spread:.1f} % (first sample {samples[0][1]} KiB)")
    print(f"open fds: first {fds[0]}, last {fds[-1]}, min {min(fds)}, max {max(fds)}")
    other = [line for line in bytes(err.data).decode(errors="replace").splitlines()
             if line and not line.startswith("Tracing") and not LOST_RE.search(line.encode())]
    if other:
        print("tracer stderr:\n" + "\n".join(other[:20]))
    ok = lost == 0 and spread <= 5 and fds[-1] <= fds[0] and status == 0
    print("goals (0 lost, RSS within 5 %, no fd growth):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
