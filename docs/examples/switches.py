"""A user's own program: print every context switch (prev -> next) on the CPUs.

Run it with ``pybpf run docs/examples/switches.py [--count N]``.  It uses the
same DSL as the shipped programs: local types with only the members read,
CO-RE field loads, a BPF subprogram (bpf-to-bpf call), a helper by name, and a
perf event array.
"""

from __future__ import annotations

import argparse
import struct
import sys
from typing import TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, Asm
from pybpf.cdecl import Struct, pid_t
from pybpf.isa import Instruction
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool
from pybpf.uapi import BPF_F_CURRENT_CPU, BPF_MAP_TYPE_PERF_EVENT_ARRAY

task_struct = Struct("task_struct", [("pid", pid_t)])
CTX_ARG = 8  # tp_btf context: u64 arguments (bool preempt, prev, next, ...)
EVENT = -8  # struct { u32 prev_pid; u32 next_pid; } on the stack


def sched_switch() -> list[Instruction]:
    a = Asm()
    a.mov(R6, R1)
    a.ldx(R7, R6, 1 * CTX_ARG, size=8)  # prev
    a.ldx(R8, R6, 2 * CTX_ARG, size=8)  # next
    a.mov(R1, R7).call_sub("task_pid")  # event.prev_pid = task_pid(prev)
    a.stx(FP, EVENT, R0, size=4)
    a.mov(R1, R8).call_sub("task_pid")  # event.next_pid = task_pid(next)
    a.stx(FP, EVENT + 4, R0, size=4)
    a.mov(R1, R6)
    a.ld_map_fd(R2, "events")
    a.mov32(R3, BPF_F_CURRENT_CPU)
    a.mov(R4, FP).add(R4, EVENT)
    a.mov(R5, 8)
    a.call("perf_event_output")
    a.mov(R0, 0).exit()

    # static __noinline u32 task_pid(struct task_struct *t) { return t->pid; }
    a.subprog("task_pid")
    a.ldx_core(R0, R1, task_struct.pid)
    a.exit()
    return a.assemble()


class Switches(Tool):
    name = "switches"
    description = "Print context switches as 'CPU prev_pid -> next_pid'."
    events_map = "events"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=int, default=0, help="stop after N switches")

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        return ObjectSpec(
            "switches",
            programs=[ProgramSpec("switch", "tp_btf/sched_switch", sched_switch())],
            maps=[MapSpec("events", BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0)],
        )

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        self.left = args.count or -1
        out.write("CPU PREV -> NEXT\n")

    def on_event(self, cpu: int, data: bytes, out: TextIO) -> None:
        if self.left == 0:
            return  # events drained after the last one counted
        prev_pid, next_pid = struct.unpack_from("<II", data)
        out.write(f"{cpu:<3} {prev_pid} -> {next_pid}\n")
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt  # ends the run like Ctrl-C: flush, clean up


TOOL = Switches()

if __name__ == "__main__":
    sys.exit("run me with: pybpf run " + __file__)
