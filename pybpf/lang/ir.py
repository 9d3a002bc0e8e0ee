"""The intermediate form: three-address instructions on unlimited virtual registers.

The front end writes it without thinking about R0-R10; :mod:`.regalloc` maps virtual
registers onto BPF registers or stack slots; :mod:`.codegen` turns it into ``Asm`` calls.
Every instruction keeps the source line it came from (for line info and errors).
"""

from __future__ import annotations

from typing import Any, Optional, Union


class VReg:
    __slots__ = ("id", "hint")

    def __init__(self, id: int, hint: str = "") -> None:
        self.id, self.hint = id, hint

    def __repr__(self) -> str:
        return f"%{self.id}{'.' + self.hint if self.hint else ''}"


class FrameObj:
    """A stack object (struct local, map key, helper buffer): its offset from R10 is
    decided when the frame is laid out, after register allocation."""

    __slots__ = ("size", "align", "name", "offset")

    def __init__(self, size: int, align: int = 8, name: str = "") -> None:
        self.size, self.align, self.name = size, align, name
        self.offset = 0  # negative, set by the frame layout

    def __repr__(self) -> str:
        return f"[{self.name or 'obj'}:{self.size}]"


Operand = Union[VReg, int]
Base = Union[VReg, FrameObj]


class Insn:
    __slots__ = ("line",)
    is_call = False
    ends_block = False  # no fall-through

    def uses(self) -> list[VReg]:
        return []

    def defs(self) -> list[VReg]:
        return []


def _regs(*items: Any) -> list[VReg]:
    return [x for x in items if isinstance(x, VReg)]


class Mov(Insn):
    __slots__ = ("dst", "src")

    def __init__(self, dst: VReg, src: Operand) -> None:
        self.dst, self.src = dst, src

    def uses(self) -> list[VReg]:
        return _regs(self.src)

    def defs(self) -> list[VReg]:
        return [self.dst]


class Bin(Insn):
    """``dst = a <op> b``; ``w32``: the 32-bit ALU form (shifts of 32-bit types)."""

    __slots__ = ("op", "dst", "a", "b", "w32")

    def __init__(self, op: str, dst: VReg, a: VReg, b: Operand, w32: bool = False) -> None:
        self.op, self.dst, self.a, self.b, self.w32 = op, dst, a, b, w32

    def uses(self) -> list[VReg]:
        return _regs(self.a, self.b)

    def defs(self) -> list[VReg]:
        return [self.dst]


class Un(Insn):
    """``dst = <op> a``: neg, zext8/16/32, sext8/16/32."""

    __slots__ = ("op", "dst", "a")

    def __init__(self, op: str, dst: VReg, a: VReg) -> None:
        self.op, self.dst, self.a = op, dst, a

    def uses(self) -> list[VReg]:
        return [self.a]

    def defs(self) -> list[VReg]:
        return [self.dst]


class Load(Insn):
    """``dst = *(size *)(base + off)``; ``core``: a CO-RE field (offset relocated);
    ``signed``: sign-extending load."""

    __slots__ = ("dst", "base", "off", "size", "signed", "core")

    def __init__(self, dst: VReg, base: Base, off: int, size: int, signed: bool = False,
                 core: Any = None) -> None:  # fmt: skip
        self.dst, self.base, self.off, self.size = dst, base, off, size
        self.signed, self.core = signed, core

    def uses(self) -> list[VReg]:
        return _regs(self.base)

    def defs(self) -> list[VReg]:
        return [self.dst]


class Store(Insn):
    __slots__ = ("base", "off", "src", "size")

    def __init__(self, base: Base, off: int, src: Operand, size: int) -> None:
        self.base, self.off, self.src, self.size = base, off, src, size

    def uses(self) -> list[VReg]:
        return _regs(self.base, self.src)


class AtomicAdd(Insn):
    __slots__ = ("base", "off", "src", "size")

    def __init__(self, base: VReg, off: int, src: VReg, size: int) -> None:
        self.base, self.off, self.src, self.size = base, off, src, size

    def uses(self) -> list[VReg]:
        return [self.base, self.src]


class Addr(Insn):
    """``dst = &frame_obj + off``."""

    __slots__ = ("dst", "obj", "off")

    def __init__(self, dst: VReg, obj: FrameObj, off: int = 0) -> None:
        self.dst, self.obj, self.off = dst, obj, off

    def defs(self) -> list[VReg]:
        return [self.dst]


class CoreOffset(Insn):
    """``dst = src + offsetof(field)`` with the offset relocated (CO-RE)."""

    __slots__ = ("dst", "src", "field")

    def __init__(self, dst: VReg, src: VReg, field: Any) -> None:
        self.dst, self.src, self.field = dst, src, field

    def uses(self) -> list[VReg]:
        return [self.src]

    def defs(self) -> list[VReg]:
        return [self.dst]


class CoreValue(Insn):
    """``dst = <relocated constant>`` (``field_exists``, ``type_exists``...): an ``Asm``
    method name and its argument."""

    __slots__ = ("dst", "method", "arg")

    def __init__(self, dst: VReg, method: str, arg: Any) -> None:
        self.dst, self.method, self.arg = dst, method, arg

    def defs(self) -> list[VReg]:
        return [self.dst]


class LdMap(Insn):
    """``dst = &map`` or, with ``value``, ``dst = &map_value + offset``."""

    __slots__ = ("dst", "name", "value", "offset")

    def __init__(self, dst: VReg, name: str, value: bool = False, offset: int = 0) -> None:
        self.dst, self.name, self.value, self.offset = dst, name, value, offset

    def defs(self) -> list[VReg]:
        return [self.dst]


class Call(Insn):
    """A helper (by name) or, with ``sub``, a bpf-to-bpf call; r1-r5 and r0 are clobbered."""

    __slots__ = ("dst", "target", "args", "sub")
    is_call = True

    def __init__(self, dst: Optional[VReg], target: str, args: list[Operand],
                 sub: bool = False) -> None:  # fmt: skip
        self.dst, self.target, self.args, self.sub = dst, target, args, sub

    def uses(self) -> list[VReg]:
        return _regs(*self.args)

    def defs(self) -> list[VReg]:
        return [self.dst] if self.dst is not None else []


class Param(Insn):
    """``dst = r<index+1>`` at function entry."""

    __slots__ = ("dst", "index")

    def __init__(self, dst: VReg, index: int) -> None:
        self.dst, self.index = dst, index

    def defs(self) -> list[VReg]:
        return [self.dst]


class Label(Insn):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Jmp(Insn):
    __slots__ = ("target",)
    ends_block = True

    def __init__(self, target: str) -> None:
        self.target = target


class CJmp(Insn):
    """``if a <op> b goto target`` (op: jeq, jne, jgt, jsgt, ... as ``Asm`` names them)."""

    __slots__ = ("op", "a", "b", "target")

    def __init__(self, op: str, a: VReg, b: Operand, target: str) -> None:
        self.op, self.a, self.b, self.target = op, a, b, target

    def uses(self) -> list[VReg]:
        return _regs(self.a, self.b)


class Ret(Insn):
    """``return src``; ``src`` None: r0 already holds the result (a call's)."""

    __slots__ = ("src",)
    ends_block = True

    def __init__(self, src: Optional[Operand]) -> None:
        self.src = src

    def uses(self) -> list[VReg]:
        return _regs(self.src)


class Function:
    """One compiled function's IR: a program (``ctx`` in r1) or a subprogram."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.insns: list[Insn] = []
        self.nregs = 0
        self.frame: list[FrameObj] = []
        self.entry: list[Insn] = []  # zero-initialisations hoisted to the entry
        self.calls: set[str] = set()  # subprograms called
        self.line = 0  # the def line
        self.source: Any = None

    def vreg(self, hint: str = "") -> VReg:
        self.nregs += 1
        return VReg(self.nregs - 1, hint)

    def frame_obj(self, size: int, align: int = 8, name: str = "") -> FrameObj:
        obj = FrameObj(size, align, name)
        self.frame.append(obj)
        return obj

    def dump(self) -> str:
        out = []
        for insn in self.entry + self.insns:
            fields = [f"{k}={getattr(insn, k)!r}" for k in insn.__slots__ if k != "line"]
            out.append(f"{type(insn).__name__} " + " ".join(fields))
        return "\n".join(out)
