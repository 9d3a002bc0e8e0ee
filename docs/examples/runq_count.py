"""Count how many times each process is switched in, per interval.

Run it with ``pybpf run docs/examples/runq_count.py [-p PID] [--top N] [interval] [count]``.
It shows a tool that summarizes instead of streaming events: a hash map keyed by process ID
that the program updates atomically, a per-CPU array, and both read from user space with
the typed mapping API (batch lookup-and-delete for the hash, one value per CPU for the array).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, Asm
from pybpf.cdecl import Struct, pid_t, u32, u64
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool, pid_arg, positive
from pybpf.uapi import BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_NOEXIST

task_struct = Struct("task_struct", [("tgid", pid_t)])
rodata = Globals([("targ_tgid", pid_t)])  # const volatile pid_t targ_tgid;
KEY, ONE = -4, -16  # stack slots: u32 key; u64 one;


def sched_switch() -> list[Instruction]:
    """SEC("tp_btf/sched_switch")
    int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
    """
    a = Asm()
    a.ldx(R6, R1, 2 * 8, size=8)  # next: the third u64 of the context
    a.ldx_core(R6, R6, task_struct.tgid)  # tgid = next->tgid
    rodata.load(a, R1, "targ_tgid")  # if (targ_tgid && tgid != targ_tgid) return 0;
    a.jeq(R1, 0, "keep")
    a.jne(R1, R6, "out")
    a.label("keep")
    a.stx(FP, KEY, R6, size=4)
    # u64 *n = bpf_map_lookup_elem(&counts, &tgid);
    a.ld_map_fd(R1, "counts").mov(R2, FP).add(R2, KEY).call("map_lookup_elem")
    a.jeq(R0, 0, "new")
    a.mov(R1, 1).atomic_add(R0, 0, R1)  # if (n) __sync_fetch_and_add(n, 1);
    a.ja("total")
    a.label("new")  # else bpf_map_update_elem(&counts, &tgid, &one, BPF_NOEXIST);
    a.st(FP, ONE, 1, size=8)
    a.ld_map_fd(R1, "counts").mov(R2, FP).add(R2, KEY).mov(R3, FP).add(R3, ONE)
    a.mov(R4, BPF_NOEXIST).call("map_update_elem")
    a.label("total")  # this CPU's total: (*bpf_map_lookup_elem(&total, &zero))++
    a.st(FP, KEY, 0, size=4)
    a.ld_map_fd(R1, "total").mov(R2, FP).add(R2, KEY).call("map_lookup_elem")
    a.jeq(R0, 0, "out")
    a.ldx(R1, R0, 0, size=8).add(R1, 1).stx(R0, 0, R1, size=8)
    a.label("out")
    a.mov(R0, 0).exit()
    return a.assemble()


class RunqCount(Tool):
    name = "runq_count"
    description = "Count switch-ins per process, every interval."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-p", "--pid", type=pid_arg, help="count this process only")
        parser.add_argument("--top", type=positive, default=5, help="rows per interval")
        parser.add_argument("interval", nargs="?", type=positive, default=1, help="seconds")
        parser.add_argument("count", nargs="?", type=positive, help="number of intervals")

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        return ObjectSpec(
            "runq_count",
            programs=[ProgramSpec("sched_switch", "tp_btf/sched_switch", sched_switch())],
            maps=[
                MapSpec("counts", BPF_MAP_TYPE_HASH, 4, 8, 10240, key_type=u32, value_type=u64),
                MapSpec("total", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1),
            ],
            rodata=rodata,
        )

    def rodata(self, args: argparse.Namespace) -> dict:
        return {"targ_tgid": args.pid or 0}

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.left: Optional[int] = args.count
        out.write("Counting switch-ins... Hit Ctrl-C to end.\n")

    def interval(self, args: argparse.Namespace) -> Optional[float]:
        return float(args.interval)

    def on_interval(self, obj: Any, out: TextIO) -> bool:
        self.summary(obj, out)
        if self.left is not None:
            self.left -= 1
        return self.left != 0

    def on_stop(self, obj: Any, out: TextIO) -> None:
        self.summary(obj, out)  # Ctrl-C: what was counted since the last interval

    def summary(self, obj: Any, out: TextIO) -> None:
        # The hash map, typed: u32 keys, u64 values; read and emptied in batches (5.6).
        counts = dict(obj.maps["counts"].typed("I", "Q").lookup_batch(delete=True))
        # The per-CPU array: one value per possible CPU; then zero on every CPU.
        total = obj.maps["total"].typed("I", "Q")
        per_cpu = total[0]
        total[0] = 0
        out.write(f"switch-ins per CPU: {per_cpu}\n{'PID':<7} SWITCH-INS\n")
        for pid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.args.top]:
            out.write(f"{pid:<7} {n}\n")


TOOL = RunqCount()
