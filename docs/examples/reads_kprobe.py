"""read(2) calls and bytes per process, from a kprobe and a kretprobe on ``ksys_read``.

Run it with ``pybpf run docs/examples/reads_kprobe.py`` and stop it with Ctrl-C: it prints
``PID CALLS BYTES`` for every process that called read(2) meanwhile.  Needs kprobes
(CONFIG_KPROBES and the kprobe PMU, Linux 4.17+; the example is x86-64: the return value is
``pt_regs.ax``, read with a CO-RE relocation like any kernel struct).
``docs/examples/reads_fentry.py`` is the same tool on fentry/fexit.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, Asm
from pybpf.cdecl import Int, Struct
from pybpf.isa import Instruction
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool
from pybpf.uapi import BPF_MAP_TYPE_HASH, BPF_NOEXIST

pt_regs = Struct("pt_regs", [("ax", Int("unsigned long", 8))])  # x86-64: the return value register
KEY = -8  # u32 tgid on the stack
ONE = -16  # u64 initial value


def add_for_current_process(a: Asm, map_name: str, amount) -> None:
    """``map[tgid] += amount``: an atomic add on the existing entry, else insert ``amount``
    (BPF_NOEXIST: if another CPU inserted first, add again)."""
    a.call("get_current_pid_tgid")
    a.rsh(R0, 32)
    a.stx(FP, KEY, R0, size=4)
    a.stx(FP, ONE, amount, size=8)
    for attempt in range(2):
        a.ld_map_fd(R1, map_name)
        a.mov(R2, FP).add(R2, KEY)
        a.call("map_lookup_elem")
        a.jeq(R0, 0, f"insert{attempt}")
        a.ldx(R1, FP, ONE, size=8)
        a.atomic_add(R0, 0, R1, size=8)
        a.ja("out")
        a.label(f"insert{attempt}")
        if attempt == 0:
            a.ld_map_fd(R1, map_name)
            a.mov(R2, FP).add(R2, KEY)
            a.mov(R3, FP).add(R3, ONE)
            a.mov(R4, BPF_NOEXIST)
            a.call("map_update_elem")
            a.jne(R0, 0, "insert_lost")  # -EEXIST: another CPU inserted first
            a.ja("out")
            a.label("insert_lost")
    a.label("out")
    a.mov(R0, 0).exit()


def on_entry() -> list[Instruction]:
    a = Asm()
    a.mov(R6, 1)
    add_for_current_process(a, "calls", R6)
    return a.assemble()


def on_return() -> list[Instruction]:
    a = Asm()
    a.ldx_core(R6, R1, pt_regs.ax)  # ssize_t returned by ksys_read
    a.jsgt(R6, 0, "count")
    a.mov(R0, 0).exit()  # errors and end of file add nothing
    a.label("count")
    add_for_current_process(a, "bytes", R6)
    return a.assemble()


def print_table(obj: Any, out: TextIO) -> None:
    calls = {struct.unpack("<I", k)[0]: struct.unpack("<Q", v)[0]
             for k, v in obj.maps["calls"].items()}  # fmt: skip
    nbytes = {struct.unpack("<I", k)[0]: struct.unpack("<Q", v)[0]
              for k, v in obj.maps["bytes"].items()}  # fmt: skip
    out.write(f"{'PID':>7} {'CALLS':>10} {'BYTES':>14}\n")
    for pid in sorted(calls):
        out.write(f"{pid:>7} {calls[pid]:>10} {nbytes.get(pid, 0):>14}\n")


def maps() -> list[MapSpec]:
    return [MapSpec("calls", BPF_MAP_TYPE_HASH, 4, 8, 10240),
            MapSpec("bytes", BPF_MAP_TYPE_HASH, 4, 8, 10240)]  # fmt: skip


class ReadsKprobe(Tool):
    name = "reads_kprobe"
    description = "read(2) calls and bytes per process (kprobe/kretprobe on ksys_read)."

    def build(self, args: Any) -> ObjectSpec:
        return ObjectSpec("reads", programs=[
            ProgramSpec("read_entry", "kprobe/ksys_read", on_entry()),
            ProgramSpec("read_return", "kretprobe/ksys_read", on_return()),
        ], maps=maps())  # fmt: skip

    def header(self, args: Any, out: TextIO) -> None:
        out.write("Counting read(2) per process... Hit Ctrl-C to end.\n")

    def on_stop(self, obj: Any, out: TextIO) -> None:
        print_table(obj, out)


TOOL = ReadsKprobe()

if __name__ == "__main__":
    sys.exit("run me with: pybpf run " + __file__)
