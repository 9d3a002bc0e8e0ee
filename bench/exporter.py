"""`pybpf export runqlat` under load: scrape latency and the exporter's CPU cost.

Each round starts ``stress-ng --switch`` (its rate set with ``--switch-freq``), then scrapes
the exporter every ``--every`` seconds for ``--seconds`` while measuring:

- sched events/s: runs of the three BPF programs per second (bpf_stats run_cnt), which is
  the rate the in-kernel histograms are updated at;
- scrape latency: wall time of one GET /metrics (urllib, from this process);
- exporter CPU: user+system time of the exporter process (/proc/PID/stat) per second of
  wall time, while scraped and, in a separate window, while not scraped;
- sched_switch ns/run and the programs' total CPU (bpf_stats): the in-kernel cost, which is
  where the aggregation happens.

CPU times come from /proc/PID/stat in clock ticks (10 ms): scrape often (``--every 0.1``) or
long for a precise CPU-per-scrape figure.

    python bench/exporter.py [--seconds 10] [--rounds 3] [--every 1] [--switch-freq 50000]
        [--per-process]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pybpf.syscall import enable_stats, iter_prog_ids, prog_get_fd_by_id, prog_info

REPO = Path(__file__).resolve().parent.parent
NAMES = ("sched_wakeup", "sched_wakeup_new", "sched_switch")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prog_stats(ids: set[int]) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt) of the exporter's programs."""
    out = {}
    for prog_id in ids:
        with prog_get_fd_by_id(prog_id) as fd:
            info = prog_info(fd.fileno())
        out[info.name] = (info.run_time_ns, info.run_cnt)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_round(args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    before = set(iter_prog_ids())
    extra = ["-P"] if args.per_process else []
    exporter = subprocess.Popen(
        [sys.executable, "-m", "pybpf", "export", "runqlat", "--listen", f"127.0.0.1:{port}",
         *extra],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert exporter.stderr is not None
        line = exporter.stderr.readline()
        if "Serving" not in line:
            raise SystemExit(f"exporter did not start: {line}{exporter.stderr.read()}")
        ours: set[int] = set()
        for prog_id in set(iter_prog_ids()) - before:
            with prog_get_fd_by_id(prog_id) as fd:
                if prog_info(fd.fileno()).name in NAMES:
                    ours.add(prog_id)
        url = f"http://127.0.0.1:{port}/metrics"
        stress = subprocess.Popen(
            ["stress-ng", "--switch", "2", "--switch-freq", str(args.switch_freq), "--quiet",
             "-t", str(int(2 * args.seconds + 5))],
        )  # fmt: skip
        try:
            time.sleep(1.0)
            # window 1: not scraped
            s0, c0, t0 = prog_stats(ours), cpu_seconds(exporter.pid), time.monotonic()
            time.sleep(args.seconds)
            idle_cpu = (cpu_seconds(exporter.pid) - c0) / (time.monotonic() - t0)
            # window 2: scraped every args.every seconds
            latencies, size = [], 0
            c1, t1 = cpu_seconds(exporter.pid), time.monotonic()
            next_at = t1
            while time.monotonic() - t1 < args.seconds:
                start = time.monotonic()
                with urllib.request.urlopen(url, timeout=10) as r:
                    size = len(r.read())
                latencies.append(time.monotonic() - start)
                next_at += args.every
                time.sleep(max(0.0, next_at - time.monotonic()))
            wall = time.monotonic() - t1
            scraped_cpu = (cpu_seconds(exporter.pid) - c1) / wall
            s1, elapsed = prog_stats(ours), time.monotonic() - t0
        finally:
            stress.send_signal(signal.SIGINT)
            stress.wait()
    finally:
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(timeout=15)
    runs = sum(s1[n][1] - s0[n][1] for n in s1)
    bpf_ns = sum(s1[n][0] - s0[n][0] for n in s1)
    switch_ns = (s1["sched_switch"][0] - s0["sched_switch"][0]) / max(
        1, s1["sched_switch"][1] - s0["sched_switch"][1]
    )
    return {
        "events_per_s": runs / elapsed,
        "scrape_ms": statistics.median(latencies) * 1000,
        "scrape_ms_max": max(latencies) * 1000,
        "scrapes": len(latencies),
        "bytes": size,
        "cpu_scraped": scraped_cpu * 100,
        "cpu_ms_per_scrape": scraped_cpu * wall / len(latencies) * 1000,
        "bpf_cpu": bpf_ns / (elapsed * 1e9) * 100,
        "cpu_idle": idle_cpu * 100,
        "switch_ns": switch_ns,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--every", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--switch-freq", type=int, default=50000,
                   help="stress-ng --switch-freq per worker (2 workers)")  # fmt: skip
    p.add_argument("--per-process", action="store_true", help="export with -P")
    args = p.parse_args()
    with enable_stats():
        rounds = [one_round(args) for _ in range(args.rounds)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    mode = "-P (per process)" if args.per_process else "one histogram"
    print(f"pybpf export runqlat, {mode}, {args.rounds} rounds x {args.seconds:g} s, "
          f"scrape every {args.every:g} s")  # fmt: skip
    print(f"  sched events/s (BPF program runs)   {med('events_per_s'):>12,.0f}")
    print(f"  scrape latency, median (ms)         {med('scrape_ms'):>12.2f}")
    print(f"  scrape latency, worst round max (ms){max(r['scrape_ms_max'] for r in rounds):>12.2f}")
    print(f"  exposition size (bytes)             {med('bytes'):>12,.0f}")
    print(f"  exporter CPU while scraped (%)      {med('cpu_scraped'):>12.2f}")
    print(f"  exporter CPU per scrape (ms)        {med('cpu_ms_per_scrape'):>12.2f}")
    print(f"  exporter CPU, not scraped (%)       {med('cpu_idle'):>12.2f}")
    print(f"  BPF programs' CPU (% of one CPU)    {med('bpf_cpu'):>12.2f}")
    print(f"  sched_switch ns/run                 {med('switch_ns'):>12.0f}")


if __name__ == "__main__":
    main()
