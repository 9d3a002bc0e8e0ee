"""Exec -> header time and peak RSS of `pybpf run runqslower|runqlat`, optionally against C.

The header is printed after every program is loaded and attached (and, for runqslower, the
event buffer is open), so the time to the header is the time until tracing is live.  Peak RSS
is the child's ``ru_maxrss`` from ``wait4``, and so is its CPU time (user + system, the whole
run: a figure that waiting for a CPU on a busy machine does not inflate).  Each tool runs on a
pseudo-terminal, as a user runs it (stdout line-buffered, no ``stdbuf``), and is stopped with
SIGINT at the header.

    python bench/startup.py [N] [--tool runqslower|runqlat] [--min-us US] [--compare-c]
                            [--python PATH] [--env NAME=VALUE ...]

With ``--compare-c`` libbpf-tools' C tool (``/usr/sbin/runqslower`` or ``/usr/sbin/runqlat``,
Debian package libbpf-tools) runs too, alternating with pybpf run by run, so that both see the
same machine load; the ratio of the medians is printed.  Defaults: N = 15 runs of each after
one unmeasured warm-up run of each; runqslower with ``--min-us 200`` (the C tool: ``200``).
``PYTHONDONTWRITEBYTECODE`` is removed from pybpf's environment: an installed pybpf runs from
cached bytecode.  ``--env PYBPF_BTF_CACHE=0`` measures a start without the BTF cache.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import statistics
import subprocess
import sys
import time

HEADERS = {
    "runqslower": b"LAT(us)",
    "runqlat": b"Hit Ctrl-C to end.",
}


def one_run(argv: list[str], marker: bytes, env: dict[str, str]) -> tuple[float, float, float]:
    """(ms from fork to the header on the terminal, peak RSS in MiB, CPU ms) of one run."""
    master, slave = os.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        while marker not in seen:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: the tool exited and closed the terminal
                if e.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                proc.wait()
                text = seen.decode(errors="replace")
                raise SystemExit(f"{argv[0]} exited before its header:\n{text}")
            seen += chunk
        elapsed = time.perf_counter() - start
        time.sleep(0.2)  # let the tool reach its wait before Ctrl-C
        proc.send_signal(signal.SIGINT)
        while True:  # drain until the tool is gone (runqlat prints its histogram)
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
    finally:
        os.close(master)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = (usage.ru_utime + usage.ru_stime) * 1000  # the whole run: start, header, exit
    return elapsed * 1000, usage.ru_maxrss / 1024, cpu


def summary(label: str, results: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    times = sorted(t for t, _, _ in results)
    rss = sorted(r for _, r, _ in results)
    cpu = sorted(c for _, _, c in results)
    t_med, r_med, c_med = statistics.median(times), statistics.median(rss), statistics.median(cpu)
    print(f"{label}: runs {len(results)}; exec -> header median {t_med:.1f} ms "
          f"(min {times[0]:.1f}, max {times[-1]:.1f}); peak RSS median {r_med:.1f} MiB "
          f"(min {rss[0]:.1f}, max {rss[-1]:.1f}); CPU (user+sys, whole run) median "
          f"{c_med:.1f} ms")
    return t_med, r_med, c_med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=15)
    ap.add_argument("--tool", choices=sorted(HEADERS), default="runqslower")
    ap.add_argument("--min-us", type=int, default=200, help="runqslower's threshold")
    ap.add_argument("--compare-c", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs pybpf")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of pybpf's runs")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(e.split("=", 1) for e in args.env)  # type: ignore[misc]
    tool_args = [str(args.min_us)] if args.tool == "runqslower" else []
    commands = {
        "pybpf": ([args.python, "-m", "pybpf", "run", args.tool]
                  + (["--min-us", str(args.min_us)] if tool_args else []), env),
    }
    if args.compare_c:
        commands["C"] = ([f"/usr/sbin/{args.tool}", *tool_args], dict(os.environ))
    marker = HEADERS[args.tool]
    print(f"{args.tool}: " + "; ".join(" ".join(argv) for argv, _ in commands.values()))
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in commands}
    for argv, cenv in commands.values():
        one_run(argv, marker, cenv)  # warm-up: page cache, bytecode, BTF cache
    for i in range(args.runs):
        order = list(commands.items())
        if i % 2:
            order.reverse()  # alternate who goes first
        for label, (argv, cenv) in order:
            results[label].append(one_run(argv, marker, cenv))
    medians = {label: summary(label, res) for label, res in results.items()}
    if "C" in medians:
        (pt, pr, pc), (ct, cr, cc) = medians["pybpf"], medians["C"]
        ratios = sorted(p[0] / c[0] for p, c in zip(results["pybpf"], results["C"]))
        print(f"pybpf / C: exec -> header {pt / ct:.2f}x (median of per-run ratios "
              f"{statistics.median(ratios):.2f}x), peak RSS {pr / cr:.2f}x, CPU {pc / cc:.2f}x")


if __name__ == "__main__":
    main()
