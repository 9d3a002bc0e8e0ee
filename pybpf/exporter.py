"""``pybpf export PROGRAM --listen HOST:PORT``: serve a tool's maps as Prometheus metrics.

The BPF side aggregates in the kernel (runqlat's log2 histograms); a scrape reads the maps
and renders them in the text exposition format through ``prometheus_client``: its
exposition, content negotiation (OpenMetrics) and HTTP server are what every Prometheus
client library is tested against, where a hand-written one would be re-tested here.  It is
imported only by this command.

Lifecycle as ``pybpf run``: SIGINT and SIGTERM stop the HTTP server, then the object is
closed, which frees every program, link and map of ours.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Any, TextIO

from .errors import PyBPFError
from .runner import (
    Terminated,
    add_load_arguments,
    load_and_attach,
    load_tool,
    prepare_tool,
    stop_signals,
)
from .tool import Tool

DEFAULT_LISTEN = "127.0.0.1:9435"  # ebpf_exporter's port: one per host, where peers look


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` or ``:PORT`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class _Collector:
    """One scrape: the tool's metrics, then what its BPF programs cost; serialized."""

    def __init__(self, tool: Tool, obj: Any, args: argparse.Namespace) -> None:
        self.tool, self.obj, self.args = tool, obj, args
        self.lock = threading.Lock()

    def collect(self) -> Any:
        with self.lock:
            return list(self.tool.collect(self.obj, self.args)) + program_metrics(self.obj)


def program_metrics(obj: Any) -> list[Any]:
    """``pybpf_program_runs_total`` and ``pybpf_program_run_seconds_total`` per program, from
    BPF_OBJ_GET_INFO_BY_FD: the in-kernel cost of the measurement itself.  The kernel counts
    them only while BPF statistics are on (``--bpf-stats``, or sysctl
    ``kernel.bpf_stats_enabled=1``; 5.1), at ~20 ns per run."""
    from prometheus_client.core import CounterMetricFamily

    from .syscall import prog_info

    runs = CounterMetricFamily(
        "pybpf_program_runs", "Runs of the exporter's BPF programs (with BPF stats on).",
        labels=["program"],
    )  # fmt: skip
    seconds = CounterMetricFamily(
        "pybpf_program_run_seconds", "Time spent in the exporter's BPF programs (with BPF "
        "stats on).", labels=["program"],
    )  # fmt: skip
    for name, fd in sorted(obj.programs.items()):
        info = prog_info(fd.fileno())
        runs.add_metric([name], info.run_cnt)
        seconds.add_metric([name], info.run_time_ns / 1e9)
    return [runs, seconds]


def export_parser(tool: Tool, name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"pybpf export {name}",
        description=f"Serve {name}'s in-kernel aggregates as Prometheus metrics.",
    )
    parser.add_argument("--listen", type=parse_listen, default=DEFAULT_LISTEN,
                        metavar="HOST:PORT", help=f"address to serve /metrics on "
                        f"(default {DEFAULT_LISTEN}; :PORT for every address)")  # fmt: skip
    parser.add_argument("--bpf-stats", action="store_true",
                        help="count runs and run time of the BPF programs (BPF_ENABLE_STATS, "
                        "Linux 5.8; ~20 ns per run): pybpf_program_* metrics")  # fmt: skip
    add_load_arguments(parser)
    tool.add_export_arguments(parser)
    return parser


def serve(argv: list[str], err: TextIO = sys.stderr) -> int:
    """``pybpf export PROGRAM ARGS...`` (the CLI has checked that a PROGRAM comes first)."""
    tool = load_tool(argv[0])
    if not tool.exportable:
        raise PyBPFError(f"{argv[0]} has no metrics to export (try: pybpf export runqlat)")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise PyBPFError(
            "pybpf export needs prometheus_client: pip install prometheus_client"
        ) from None
    from prometheus_client import CollectorRegistry, start_http_server

    parser = export_parser(tool, argv[0])
    args = parser.parse_args(argv[1:])
    args.export = True
    tool.check_arguments(parser, args)
    prepared = prepare_tool(tool, args, err)
    from .loader import LoadedObject

    with stop_signals(), ExitStack() as stack:
        with LoadedObject(prepared, tool.rodata(args)) as obj:
            load_and_attach(obj, args, err)
            if args.bpf_stats:
                from .syscall import enable_stats

                stack.enter_context(enable_stats())  # counted while this fd is open
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(tool, obj, args))  # type: ignore[arg-type]
            host, port = args.listen
            try:
                server, thread = start_http_server(port, host, registry)
            except OSError as exc:
                raise PyBPFError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            try:
                where = f"[{host}]" if ":" in host else host
                err.write(f"Serving {argv[0]} metrics on http://{where}:{port}/metrics\n")
                err.flush()
                try:
                    while True:
                        signal.pause()
                except (KeyboardInterrupt, Terminated):
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
            finally:
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)
    return 0
