"""read(2) calls and bytes per process, from fentry and fexit programs on ``ksys_read``.

The same tool as ``docs/examples/reads_kprobe.py`` on BPF trampolines (Linux 5.5+, a kernel
with ftrace direct calls): cheaper than kprobes, and an fexit program reads the function's
arguments and return value as typed u64 slots of its context instead of registers.  The
return value's slot is after the arguments: its index is the number of parameters of
``ksys_read`` in the kernel's BTF, read at build time, not written down.
Run it with ``pybpf run docs/examples/reads_fentry.py``; Ctrl-C prints ``PID CALLS BYTES``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, TextIO

from pybpf.asm import R0, R1, R6, Asm
from pybpf.btf import BTF, BTF_KIND_FUNC
from pybpf.isa import Instruction
from pybpf.object import ObjectSpec, ProgramSpec
from pybpf.tool import Tool

# The map code and the table are the kprobe example's.
_here = Path(__file__).with_name("reads_kprobe.py")
_spec = importlib.util.spec_from_file_location("reads_kprobe", _here)
reads = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(reads)  # type: ignore[union-attr]

FUNC = "ksys_read"


def nr_params(btf: BTF, func: str) -> int:
    """How many parameters ``func`` has, from its FUNC_PROTO in the kernel's BTF."""
    proto = btf.type(btf.find_one(func, BTF_KIND_FUNC)).type
    return btf.type(proto).vlen


def on_entry() -> list[Instruction]:
    a = Asm()
    a.mov(R6, 1)
    reads.add_for_current_process(a, "calls", R6)
    return a.assemble()


def on_exit(nargs: int) -> list[Instruction]:
    a = Asm()
    a.ldx(R6, R1, 8 * nargs, size=8)  # ctx: u64 args[nargs], then the return value
    a.jsgt(R6, 0, "count")
    a.mov(R0, 0).exit()
    a.label("count")
    reads.add_for_current_process(a, "bytes", R6)
    return a.assemble()


class ReadsFentry(Tool):
    name = "reads_fentry"
    description = "read(2) calls and bytes per process (fentry/fexit on ksys_read)."

    def build(self, args: Any) -> ObjectSpec:
        nargs = nr_params(BTF.kernel(), FUNC)
        return ObjectSpec("reads", programs=[
            ProgramSpec("read_entry", f"fentry/{FUNC}", on_entry()),
            ProgramSpec("read_exit", f"fexit/{FUNC}", on_exit(nargs)),
        ], maps=reads.maps())  # fmt: skip

    def header(self, args: Any, out: TextIO) -> None:
        out.write("Counting read(2) per process... Hit Ctrl-C to end.\n")

    def on_stop(self, obj: Any, out: TextIO) -> None:
        reads.print_table(obj, out)


TOOL = ReadsFentry()

if __name__ == "__main__":
    sys.exit("run me with: pybpf run " + __file__)
