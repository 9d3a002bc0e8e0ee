"""Context switches to a process, written in pybpf's Python language (docs/language.md).

Run it with ``pybpf run docs/examples/switch_events.py [--pid PID] [--count N]``: one
line per switch to a thread of PID (of any process without --pid), with the task it
replaced, its parent's tgid and its name.  The BPF side is the decorated function
below, compiled from its source: the tracepoint's arguments come by name from the
kernel's BTF, ``next.real_parent.tgid`` is two CO-RE relocated loads, and the event is
declared once for both sides.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from pybpf.lang import ReadOnly, RingBuf, Struct, char, program, s32
from pybpf.lang.tool import LangTool
from pybpf.tool import pid_arg


class Switch(Struct):
    prev_pid: s32
    next_pid: s32
    parent: s32
    comm: char[16]


class options(ReadOnly):  # noqa: N801 - read-only globals, set before loading
    tgid: s32


switches = RingBuf(1 << 20)


@program("tp_btf/sched_switch")
def on_switch(preempt, prev, next) -> s32:
    if options.tgid and next.tgid != options.tgid:
        return 0
    ev = Switch(prev_pid=prev.pid, next_pid=next.pid)
    ev.parent = next.real_parent.tgid
    ev.comm = next.comm
    switches.output(ev)
    return 0


class SwitchEvents(LangTool):
    name = "switch_events"
    description = "Print context switches to the threads of one process."
    events_map = "switches"
    programs = [on_switch]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pid", type=pid_arg, help="process (tgid) to watch (default: all)")
        parser.add_argument("--count", type=int, default=0, help="stop after N switches")

    def rodata(self, args: argparse.Namespace) -> dict:
        return {"tgid": args.pid or 0}

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        self.left = args.count or -1
        out.write("PREV -> NEXT PARENT COMM\n")

    def on_event(self, cpu: int, data: bytes, out: TextIO) -> None:
        if self.left == 0:
            return
        ev = Switch.decode(data)
        out.write(f"{ev.prev_pid} -> {ev.next_pid} {ev.parent} {ev.comm}\n")
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt  # ends the run like Ctrl-C: flush, clean up


TOOL = SwitchEvents()

if __name__ == "__main__":
    sys.exit("run me with: pybpf run " + __file__)
