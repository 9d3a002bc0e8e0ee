"""What an expression compiles to: a scalar in a register or a constant, or a place in memory."""

from __future__ import annotations

from typing import Any, Optional, Union

from . import ir
from .types import ArrayType, IntType, LangType, PtrType, StructType


class Val:
    """An rvalue: an integer (normalized to ``type``) or a pointer, in ``reg`` or ``const``."""

    __slots__ = ("type", "reg", "const")

    def __init__(self, type: LangType, reg: Optional[ir.VReg] = None,
                 const: Optional[int] = None) -> None:  # fmt: skip
        self.type, self.reg, self.const = type, reg, const

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"Val({self.type}, {self.reg if self.const is None else self.const})"


class Mem:
    """A place in memory of any type: ``base + off`` where base is a stack object or a
    pointer in a register; ``core`` (a kernel field path) makes accesses CO-RE relocated.
    ``kernel``: memory the program may not store to (read with loads or probe reads)."""

    __slots__ = ("type", "base", "off", "core", "kernel", "atomic")

    def __init__(self, type: LangType, base: Union[ir.FrameObj, ir.VReg], off: int = 0,
                 core: Any = None, kernel: bool = False, atomic: bool = False) -> None:  # fmt: skip
        self.type, self.base, self.off, self.core = type, base, off, core
        self.kernel, self.atomic = kernel, atomic

    def __repr__(self) -> str:
        return f"Mem({self.type}, {self.base}+{self.off})"


class Local:
    """A named scalar local: its one virtual register."""

    __slots__ = ("type", "reg")

    def __init__(self, type: LangType, reg: ir.VReg) -> None:
        self.type, self.reg = type, reg


Expr = Union[Val, Mem]


def is_int(t: LangType) -> bool:
    return isinstance(t, IntType)


def is_aggregate(t: LangType) -> bool:
    return isinstance(t, (ArrayType, StructType))


def is_ptr(t: LangType) -> bool:
    return isinstance(t, PtrType)
