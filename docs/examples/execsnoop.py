"""Print every program execution: PID, parent PID and the new command name.

Run it with ``pybpf run docs/examples/execsnoop.py [--ppid PID]``.  It shows a BPF ring
buffer (Linux 5.8) as the events map, a CO-RE pointer chase (``p->real_parent->tgid``) in a
``tp_btf`` program (5.5), and a read-only global that the verifier folds (``--ppid``).
"""

from __future__ import annotations

import argparse
import struct
from typing import TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, Asm
from pybpf.cdecl import Ptr, Struct, pid_t
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool, pid_arg
from pybpf.uapi import BPF_MAP_TYPE_RINGBUF

# Local types: only the members read; CO-RE finds them in the running kernel's BTF.
task_struct = Struct("task_struct", [("pid", pid_t), ("tgid", pid_t)])
task_struct___parent = Struct("task_struct___parent", [("real_parent", Ptr(task_struct))])

# const volatile pid_t targ_ppid;  (0: every parent)
rodata = Globals([("targ_ppid", pid_t)])

EVENT = struct.Struct("<II16s")  # struct event { u32 pid; u32 ppid; char comm[16]; }
EVENT_OFF = -EVENT.size  # the event, on the stack


def sched_process_exec() -> list[Instruction]:
    """SEC("tp_btf/sched_process_exec")
    int BPF_PROG(exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)"""
    a = Asm()
    a.ldx(R6, R1, 0, size=8)  # p: the first u64 of the context
    a.ldx_core(R2, R6, task_struct___parent.real_parent)  # p->real_parent
    a.ldx_core(R3, R2, task_struct.tgid)  # ppid = p->real_parent->tgid
    rodata.load(a, R1, "targ_ppid")  # if (targ_ppid && ppid != targ_ppid) return 0;
    a.jeq(R1, 0, "keep")
    a.jne(R1, R3, "out")
    a.label("keep")
    a.stx(FP, EVENT_OFF + 4, R3, size=4)  # event.ppid = ppid
    a.ldx_core(R1, R6, task_struct.tgid)
    a.stx(FP, EVENT_OFF, R1, size=4)  # event.pid = p->tgid
    a.mov(R1, FP).add(R1, EVENT_OFF + 8)  # bpf_get_current_comm(&event.comm, 16)
    a.mov(R2, 16)
    a.call("get_current_comm")
    a.ld_map_fd(R1, "events")  # bpf_ringbuf_output(&events, &event, sizeof(event), 0)
    a.mov(R2, FP).add(R2, EVENT_OFF)
    a.mov(R3, EVENT.size)
    a.mov(R4, 0)
    a.call("ringbuf_output")
    a.label("out")
    a.mov(R0, 0).exit()
    return a.assemble()


class ExecSnoop(Tool):
    name = "execsnoop"
    description = "Print every program execution: PID, PPID, COMM."
    events_map = "events"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ppid", type=pid_arg, help="only children of this process")

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        return ObjectSpec(
            "execsnoop",
            programs=[ProgramSpec("exec", "tp_btf/sched_process_exec", sched_process_exec())],
            maps=[MapSpec("events", BPF_MAP_TYPE_RINGBUF, 0, 0, 256 * 1024)],
            rodata=rodata,
        )

    def rodata(self, args: argparse.Namespace) -> dict:
        return {"targ_ppid": args.ppid or 0}

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        out.write(f"{'PID':<7} {'PPID':<7} COMM\n")

    def on_event(self, cpu: int, data: bytes, out: TextIO) -> None:
        pid, ppid, comm = EVENT.unpack(data)  # cpu is -1: one ring for every CPU
        name = comm.split(b"\0", 1)[0].decode(errors="replace")
        out.write(f"{pid:<7} {ppid:<7} {name}\n")


TOOL = ExecSnoop()
