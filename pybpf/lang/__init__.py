"""BPF programs written as typed Python functions, compiled to instructions without LLVM.

::

    from pybpf.lang import HashMap, Struct, program, u32, u64, char

    class Event(Struct):
        pid: u32
        comm: char[16]

    start = HashMap(u32, u64, 10240)

    @program("tp_btf/sched_wakeup")
    def wakeup(p):
        start[p.pid] = ktime_get_ns()

The functions are parsed with :mod:`ast` and never run; :func:`build` turns them into
an :class:`~pybpf.object.ObjectSpec` through the :class:`~pybpf.asm.Asm` layer.
docs/language.md is the reference.
"""

from .builtins import bpf, cast, field_exists, kernel_struct, sizeof, unroll
from .errors import CompileError
from .kernel import KernelStruct
from .mapdefs import (
    ArrayMap,
    HashMap,
    LruHashMap,
    PerCPUArray,
    PerCPUHashMap,
    PerfEventArray,
    ReadOnly,
    RingBuf,
)
from .program import Compiled, build, compile_subprogram, function, program
from .types import Struct, char, s8, s16, s32, s64, u8, u16, u32, u64

__all__ = [
    "ArrayMap", "CompileError", "Compiled", "HashMap", "KernelStruct", "LruHashMap",
    "PerCPUArray", "PerCPUHashMap", "PerfEventArray", "ReadOnly", "RingBuf", "Struct", "bpf",
    "build", "cast", "char", "compile_subprogram", "field_exists", "function", "kernel_struct",
    "program", "s8", "s16", "s32", "s64", "sizeof", "u8", "u16", "u32", "u64", "unroll",
]  # fmt: skip
