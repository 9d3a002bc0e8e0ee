"""IR to ``Asm``: one BPF instruction or a few per IR instruction.

r0 is the scratch register (and what calls return); r9 is the second scratch when the
allocator spilled.  Arguments of a call and the parameters of a function move between
r1-r5 and their locations as *parallel* moves, so no value is overwritten before read.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ..asm import FP, MAX_BPF_STACK, R0, R1, R2, R3, R4, R5, Asm, Reg
from . import ir
from .errors import CompileError
from .opt import simplify
from .regalloc import Allocation, Location, allocate

ARG_REGS = (R1, R2, R3, R4, R5)
_FITS32 = range(-(1 << 31), 1 << 31)


def _ref(field: Any) -> Any:
    """A kernel field's FieldRef (made once every function is compiled)."""
    ref = getattr(field, "ref", None)
    return field if ref is None else ref


def layout_frame(fn: ir.Function) -> int:
    """Give every stack object its offset from r10; returns the frame size."""
    top = 0
    for obj in sorted(fn.frame, key=lambda o: -o.align):
        top = -(-(top + obj.size) // obj.align) * obj.align
        obj.offset = -top
    if top > MAX_BPF_STACK:
        where = fn.source.where(None) if fn.source else fn.name
        raise CompileError(
            f"function {fn.name} needs {top} bytes of stack, BPF allows {MAX_BPF_STACK}", where
        )
    return top


class _Gen:
    def __init__(self, fn: ir.Function, alloc: Allocation, a: Asm, prefix: str) -> None:
        self.fn, self.alloc, self.a, self.prefix = fn, alloc, a, prefix
        self.s2 = alloc.scratch2

    def loc(self, v: ir.VReg) -> Location:
        return self.alloc.locs[v.id]

    def reg(self, v: ir.VReg) -> Optional[Reg]:
        loc = self.alloc.locs[v.id]
        return loc if isinstance(loc, Reg) else None

    def read(self, v: ir.VReg, scratch: Reg) -> Reg:
        loc = self.loc(v)
        if isinstance(loc, Reg):
            return loc
        self.a.ldx(scratch, FP, loc.offset, size=8)
        return scratch

    def read_into(self, d: Reg, src: ir.Operand) -> None:
        if isinstance(src, int):
            self.const(d, src)
            return
        loc = self.loc(src)
        if isinstance(loc, Reg):
            if loc is not d:
                self.a.mov(d, loc)
        else:
            self.a.ldx(d, FP, loc.offset, size=8)

    def const(self, d: Reg, value: int) -> None:
        value = (value + (1 << 63)) % (1 << 64) - (1 << 63)
        if value in _FITS32:
            self.a.mov(d, value)
        else:
            self.a.ld_imm64(d, value)

    def target(self, v: ir.VReg) -> Reg:
        return self.reg(v) or R0

    def write(self, v: ir.VReg, d: Reg) -> None:
        loc = self.loc(v)
        if isinstance(loc, Reg):
            if loc is not d:
                self.a.mov(loc, d)
        else:
            self.a.stx(FP, loc.offset, d, size=8)

    def operand(self, b: ir.Operand, scratch: Optional[Reg]) -> Union[Reg, int]:
        if isinstance(b, int):
            if b in _FITS32:
                return b
            assert scratch is not None
            self.a.ld_imm64(scratch, b)
            return scratch
        assert scratch is not None or self.reg(b) is not None
        return self.read(b, scratch)  # type: ignore[arg-type]

    def base(self, base: ir.Base, off: int, scratch: Reg) -> tuple[Reg, int]:
        if isinstance(base, ir.FrameObj):
            return FP, base.offset + off
        return self.read(base, scratch), off

    def label(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # -- moves ---------------------------------------------------------------
    def parallel(self, moves: list[tuple[Location, Union[Reg, ir.Operand]]]) -> None:
        """Each (dst, src) at once; src: a Reg, a vreg or a constant; r0 breaks cycles."""
        a = self.a
        later: list[tuple[Reg, ir.Operand]] = []
        pending: dict[Reg, Reg] = {}
        for dst, src in moves:
            if isinstance(src, ir.VReg):
                src_loc = self.loc(src)
                if not isinstance(src_loc, Reg):
                    assert isinstance(dst, Reg)
                    later.append((dst, src))
                    continue
                src = src_loc
            if isinstance(dst, ir.FrameObj):  # a parameter that spilled: store it first
                if isinstance(src, Reg):
                    a.stx(FP, dst.offset, src, size=8)
                else:
                    assert isinstance(src, int)
                    self.const(R0, src)
                    a.stx(FP, dst.offset, R0, size=8)
            elif isinstance(src, int):
                later.append((dst, src))
            elif src is not dst:
                pending[dst] = src
        while pending:
            sources = set(map(id, pending.values()))
            ready = next((d for d in pending if id(d) not in sources), None)
            if ready is not None:
                a.mov(ready, pending.pop(ready))
                continue
            cyc = next(iter(pending))
            a.mov(R0, cyc)
            pending = {d: (R0 if s is cyc else s) for d, s in pending.items()}
        for dst, src in later:
            self.read_into(dst, src)

    # -- instructions --------------------------------------------------------
    def emit(self, insn: ir.Insn) -> None:
        _DISPATCH[type(insn)](self, insn)

    def _mov(self, insn: Any) -> None:
        d = self.target(insn.dst)
        self.read_into(d, insn.src)
        self.write(insn.dst, d)

    def _bin(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        b = self.operand(insn.b, self.s2)
        if isinstance(b, Reg) and b is d and insn.a is not insn.b:
            d = R0
        self.read_into(d, insn.a)
        name = {"and": "and_", "or": "or_"}.get(insn.op, insn.op)
        if insn.w32:
            name = name.rstrip("_") + "32"
        getattr(a, name)(d, b)
        self.write(insn.dst, d)

    def _un(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        self.read_into(d, insn.a)
        op = insn.op
        if op == "neg":
            a.neg(d)
        elif op == "zext8":
            a.and_(d, 0xFF)
        elif op == "zext16":
            a.and_(d, 0xFFFF)
        elif op == "zext32":
            a.mov32(d, d)
        else:
            a.movsx(d, d, int(op[4:]))
        self.write(insn.dst, d)

    def _load(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        base, off = self.base(insn.base, insn.off, d)
        if insn.core is not None:
            a.ldx_core(d, base, _ref(insn.core))
            if insn.signed and insn.size < 8:
                a.movsx(d, d, insn.size * 8)
        elif insn.signed and insn.size < 8:
            a.ldxsx(d, base, off, size=insn.size)
        else:
            a.ldx(d, base, off, size=insn.size)
        self.write(insn.dst, d)

    def _store(self, insn: Any) -> None:
        a = self.a
        base, off = self.base(insn.base, insn.off, R0)
        other = self.s2 if base is R0 else R0
        if isinstance(insn, ir.Store) and isinstance(insn.src, int) and insn.src in _FITS32:
            a.st(base, off, insn.src, size=insn.size)
            return
        if isinstance(insn.src, int):
            assert other is not None
            self.const(other, insn.src)
            src = other
        else:
            src = self.read(insn.src, other)  # type: ignore[arg-type]
        if isinstance(insn, ir.AtomicAdd):
            a.atomic_add(base, off, src, size=insn.size)
        else:
            a.stx(base, off, src, size=insn.size)

    def _addr(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        a.mov(d, FP).add(d, insn.obj.offset + insn.off)
        self.write(insn.dst, d)

    def _coreoffset(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        self.read_into(d, insn.src)
        a.add_offsetof(d, _ref(insn.field))
        self.write(insn.dst, d)

    def _corevalue(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        getattr(a, insn.method)(d, _ref(insn.arg))
        self.write(insn.dst, d)

    def _ldmap(self, insn: Any) -> None:
        a = self.a
        d = self.target(insn.dst)
        if insn.value:
            a.ld_map_value(d, insn.name, insn.offset)
        else:
            a.ld_map_fd(d, insn.name)
        self.write(insn.dst, d)

    def _call(self, insn: Any) -> None:
        a = self.a
        self.parallel(list(zip(ARG_REGS, insn.args)))
        if insn.sub:
            a.call_sub(insn.target)
        else:
            a.call(insn.target)
        if insn.dst is not None:
            self.write(insn.dst, R0)

    def _label(self, insn: Any) -> None:
        a = self.a
        a.label(self.label(insn.name))

    def _jmp(self, insn: Any) -> None:
        a = self.a
        a.ja(self.label(insn.target))

    def _cjmp(self, insn: Any) -> None:
        a = self.a
        lhs = self.read(insn.a, R0)
        rhs = self.operand(insn.b, self.s2 if lhs is R0 else R0)
        getattr(a, insn.op)(lhs, rhs, self.label(insn.target))

    def _ret(self, insn: Any) -> None:
        a = self.a
        if insn.src is not None:
            self.read_into(R0, insn.src)
        a.exit()

    def _param(self, insn: Any) -> None:
        pass  # moved at entry


# one handler per IR instruction type (a dict: faster than a chain of isinstance)
_DISPATCH = {
    ir.Mov: _Gen._mov,
    ir.Bin: _Gen._bin,
    ir.Un: _Gen._un,
    ir.Load: _Gen._load,
    ir.Store: _Gen._store,
    ir.AtomicAdd: _Gen._store,
    ir.Addr: _Gen._addr,
    ir.CoreOffset: _Gen._coreoffset,
    ir.CoreValue: _Gen._corevalue,
    ir.LdMap: _Gen._ldmap,
    ir.Call: _Gen._call,
    ir.Label: _Gen._label,
    ir.Jmp: _Gen._jmp,
    ir.CJmp: _Gen._cjmp,
    ir.Ret: _Gen._ret,
    ir.Param: _Gen._param,
}


def prepare(fn: ir.Function) -> Allocation:
    """Simplify, allocate registers and lay the frame out, once per function (a
    subprogram called by several programs is emitted into each of them)."""
    done = getattr(fn, "_allocation", None)
    if done is None:
        simplify(fn)
        fn.calls = {i.target for i in fn.insns if isinstance(i, ir.Call) and i.sub}  # live ones
        done = allocate(fn)
        layout_frame(fn)
        fn._allocation = done  # type: ignore[attr-defined]
    return done


def generate(fn: ir.Function, a: Asm, prefix: str = "") -> list[int]:
    """Emit ``fn`` into ``a`` (a label ``fn.name`` at its start); returns, for every
    instruction emitted, the source line it came from."""
    alloc = prepare(fn)
    gen = _Gen(fn, alloc, a, prefix or f"{fn.name}.")
    lines: list[int] = []
    start = len(a.insns)
    a.subprog(fn.name)
    params = [i for i in fn.insns if isinstance(i, ir.Param)]
    gen.parallel(
        [(gen.loc(p.dst), ARG_REGS[p.index]) for p in params if p.dst.id in alloc.locs]
    )
    lines.extend([fn.line] * (len(a.insns) - start))
    for insn in fn.insns:
        before = len(a.insns)
        gen.emit(insn)
        lines.extend([insn.line] * (len(a.insns) - before))
    return lines
