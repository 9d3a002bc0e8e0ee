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
    """The registry's only collector: one scrape, one ``tool.collect``, serialized."""

    def __init__(self, tool: Tool, obj: Any, args: argparse.Namespace) -> None:
        self.tool, self.obj, self.args = tool, obj, args
        self.lock = threading.Lock()

    def collect(self) -> Any:
        with self.lock:
            return list(self.tool.collect(self.obj, self.args))


def export_parser(tool: Tool, name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"pybpf export {name}",
        description=f"Serve {name}'s in-kernel aggregates as Prometheus metrics.",
    )
    parser.add_argument("--listen", type=parse_listen, default=DEFAULT_LISTEN,
                        metavar="HOST:PORT", help=f"address to serve /metrics on "
                        f"(default {DEFAULT_LISTEN}; :PORT for every address)")  # fmt: skip
    add_load_arguments(parser)
    tool.add_export_arguments(parser)
    return parser


def serve(argv: list[str], err: TextIO = sys.stderr) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else err).write(
            "usage: pybpf export PROGRAM [--listen HOST:PORT] [PROGRAM ARGS...]\n"
        )
        return 0 if argv else 2
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

    args = export_parser(tool, argv[0]).parse_args(argv[1:])
    args.export = True
    prepared = prepare_tool(tool, args, err)
    from .loader import LoadedObject

    with stop_signals():
        with LoadedObject(prepared, tool.rodata(args)) as obj:
            load_and_attach(obj, args, err)
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
