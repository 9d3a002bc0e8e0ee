"""What a runnable program file provides: the contract behind ``pybpf run``.

A program module (``pybpf.programs.runqslower`` or a user's ``my_prog.py``)
defines ``TOOL``, an instance of a :class:`Tool` subclass.  The runner parses
the command line with the tool's arguments, builds the object, loads and
attaches it, prints the header, feeds events to :meth:`Tool.on_event` and
tears everything down on exit.  The tool only says *what*; the runner owns
the kernel resources and their cleanup.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, TextIO, Union

from .object import ObjectSpec


class Tool:
    """Base class of runnable BPF tools."""

    #: the name after ``pybpf run``
    name: str = ""
    #: one line for ``--help``
    description: str = ""
    #: the map the programs output events to (BPF_MAP_TYPE_RINGBUF or
    #: BPF_MAP_TYPE_PERF_EVENT_ARRAY), if any
    events_map: str = ""
    #: a per-CPU array whose element 0 counts outputs that failed in BPF (the ring
    #: buffer keeps no loss records of its own); reported through :meth:`on_lost`
    lost_map: str = ""
    #: pages per CPU of perf buffers (0: the runner's default); may be set in build()
    perf_buffer_pages: int = 0

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the tool's own command-line arguments."""

    def check_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Reject bad combinations with ``parser.error`` (exit 2, one line)."""

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        """The programs, maps and globals to load."""
        raise NotImplementedError

    def rodata(self, args: argparse.Namespace) -> dict[str, Union[int, bytes, str]]:
        """Values of the read-only globals (frozen before the programs load)."""
        return {}

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        """Print what is printed once everything is attached."""

    def on_event(self, cpu: int, data: bytes, out: TextIO) -> None:
        """One sample from the events map (``cpu`` is -1 for a ring buffer)."""

    def on_events(self, cpu: int, records: list[bytes], out: TextIO) -> None:
        """A batch of samples; override to format a batch and write it at once."""
        for data in records:
            self.on_event(cpu, data, out)

    def on_lost(self, cpu: int, count: int, err: TextIO) -> None:
        err.write(f"Lost {plural(count, 'event')} on CPU #{cpu}!\n")

    # -- tools that summarize (runqlat): maps read on a timer rather than events --

    def interval(self, args: argparse.Namespace) -> Optional[float]:
        """Seconds between calls of :meth:`on_interval`; None for none."""
        return None

    def on_interval(self, obj: Any, out: TextIO) -> bool:
        """Read the loaded object's maps (``obj.maps[name]``) and print a summary.
        Return False to end the run (runqlat's ``count`` reached)."""
        return True

    def on_stop(self, obj: Any, out: TextIO) -> None:
        """Ctrl-C or SIGTERM ended the run: print what is still to print."""

    # -- tools that serve Prometheus metrics (``pybpf export``) --

    #: whether ``pybpf export`` can serve this tool's maps as metrics
    exportable: bool = False

    def add_export_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The tool's own arguments under ``pybpf export`` (``args.export`` is True)."""

    def collect(self, obj: Any, args: argparse.Namespace) -> list[Any]:
        """Metric families (``prometheus_client.core``) read from the loaded object's maps,
        for one scrape; called from the HTTP server's threads, one at a time."""
        raise NotImplementedError


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``"1 event"``, ``"2 events"``: a count and its noun, for messages."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


# -- argument types for tools' parsers (argparse turns the error into one line, exit 2) --


def non_negative(text: str) -> int:
    """A decimal integer >= 0."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def positive(text: str) -> int:
    """A decimal integer > 0."""
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def pid_arg(text: str) -> int:
    """A process or thread ID (1 .. 2^31 - 1)."""
    value = non_negative(text)
    if not 0 < value < 1 << 31:
        raise argparse.ArgumentTypeError(f"invalid PID: {text!r}")
    return value
