"""Expressions: C integer arithmetic on typed values, conditions as jumps, places in memory.

Constants fold at compile time with the same C rules; everything else becomes IR on
virtual registers, each result normalized to its type (see :mod:`.types`).
"""

from __future__ import annotations

import ast
from typing import Any, Optional

from . import ir
from .errors import CompileError
from .types import (
    ArrayType,
    IntType,
    LangType,
    PtrType,
    StructType,
    common,
    literal_type,
    promote,
    resolve_type,
    s32,
    u64,
)
from .values import Expr, Local, Mem, Val

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.FloorDiv: "div", ast.Mod: "mod",
           ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor", ast.LShift: "lsh",
           ast.RShift: "rsh"}  # fmt: skip
_CMP = {ast.Eq: "jeq", ast.NotEq: "jne", ast.Lt: "jlt", ast.LtE: "jle", ast.Gt: "jgt",
        ast.GtE: "jge"}  # fmt: skip
_NEGATE = {"jeq": "jne", "jne": "jeq", "jlt": "jge", "jge": "jlt", "jle": "jgt", "jgt": "jle"}
_SWAP = {"jeq": "jeq", "jne": "jne", "jlt": "jgt", "jgt": "jlt", "jle": "jge", "jge": "jle"}
_FITS32 = range(-(1 << 31), 1 << 31)


def fold(op: str, t: IntType, a: int, b: int) -> int:
    """``a <op> b`` in type ``t`` as the BPF instructions compute it (division by zero
    gives 0, modulo by zero the dividend; shift counts are taken modulo the width)."""
    if op == "add":
        r = a + b
    elif op == "sub":
        r = a - b
    elif op == "mul":
        r = a * b
    elif op in ("div", "mod"):
        if b == 0:
            r = 0 if op == "div" else a
        else:
            q = abs(a) // abs(b)
            q = q if (a < 0) == (b < 0) else -q
            r = q if op == "div" else a - q * b
    elif op == "and":
        r = a & b
    elif op == "or":
        r = a | b
    elif op == "xor":
        r = a ^ b
    elif op == "lsh":
        r = a << (b & (t.bits - 1))
    else:  # rsh: arithmetic for signed types (a is already signed then)
        r = a >> (b & (t.bits - 1))
    return t.wrap(r)


def compare(op: str, a: int, b: int) -> bool:
    return {"jeq": a == b, "jne": a != b, "jlt": a < b, "jle": a <= b, "jgt": a > b,
            "jge": a >= b}[op]  # fmt: skip


class Exprs:
    """Mixin of the function compiler: everything that computes a value."""

    fn: ir.Function
    locals: dict[str, Any]
    direct = True  # kernel pointers may be loaded through (tp_btf); else probe reads

    # provided by the function compiler
    def emit(self, insn: ir.Insn) -> None: ...
    def err(self, node: Optional[ast.AST], msg: str) -> Exception: ...
    def new_label(self, hint: str) -> str: ...
    def lookup(self, node: ast.Name) -> Any: ...
    def call(self, node: ast.Call) -> Expr: ...
    def attribute(self, node: ast.Attribute) -> Expr: ...
    def subscript(self, node: ast.Subscript) -> Expr: ...

    def local_regs(self) -> set[int]: ...

    def new(self, hint: str = "") -> ir.VReg:
        return self.fn.vreg(hint)

    # -- conversions -----------------------------------------------------------
    def reg_of(self, v: Val) -> ir.VReg:
        """``v`` in a register (a constant is materialized)."""
        if v.reg is not None:
            return v.reg
        r = self.new()
        const = v.const if isinstance(v.type, IntType) is False else v.type.rep64(v.const)
        self.emit(ir.Mov(r, const))  # type: ignore[arg-type]
        return r

    def ext(self, r: ir.VReg, t: IntType) -> ir.VReg:
        """Normalize a 64-bit register image to ``t`` (zero- or sign-extend)."""
        if t.size == 8:
            return r
        out = self.new()
        self.emit(ir.Un(("sext" if t.signed else "zext") + str(t.bits), out, r))
        return out

    def convert(self, v: Val, to: LangType, node: Optional[ast.AST] = None) -> Val:
        """C's conversion of an integer to ``to`` (implicit or by a cast)."""
        if isinstance(to, PtrType) or isinstance(v.type, PtrType):
            if isinstance(to, PtrType) and isinstance(v.type, PtrType):
                return v
            if isinstance(to, IntType) and to.size == 8:
                return Val(to, v.reg, v.const)
            raise self.err(node, f"cannot convert {v.type} to {to}")
        if not isinstance(to, IntType) or not isinstance(v.type, IntType):
            raise self.err(node, f"cannot convert {v.type} to {to}")
        fr = v.type
        if v.const is not None:
            return Val(to, const=to.wrap(v.const))
        assert v.reg is not None
        if to.size == 8 or fr is to:
            return Val(to, v.reg)
        if to.size > fr.size and (not fr.signed or to.signed):
            return Val(to, v.reg)
        if to.size == fr.size and to.signed == fr.signed:
            return Val(to, v.reg)
        return Val(to, self.ext(v.reg, to))

    def convert_now(self, v: Val, to: LangType, node: Optional[ast.AST] = None) -> Val:
        """:meth:`convert` of a value used once, right now: a value just loaded from
        memory of the new type's size is loaded as the new type instead."""
        last = self.fn.insns[-1] if self.fn.insns else None
        if isinstance(to, IntType) and isinstance(v.type, IntType) and v.reg is not None \
                and isinstance(last, ir.Load) and last.dst is v.reg and last.size == to.size \
                and v.reg.id not in self.local_regs():  # fmt: skip
            last.signed = to.signed
            return Val(to, v.reg)
        return self.convert(v, to, node)

    # -- values ----------------------------------------------------------------
    def expr(self, node: ast.expr) -> Expr:
        try:
            return self._expr(node)
        except CompileError as exc:
            if exc.where is not None:
                raise
            raise self.err(node, exc.bare) from None

    def _expr(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return Val(s32, const=int(node.value))
            if isinstance(node.value, int):
                try:
                    return Val(literal_type(node.value), const=node.value)
                except Exception as exc:
                    raise self.err(node, str(exc)) from None
            if node.value is None:
                return Val(PtrType(None), const=0)
            raise self.err(node, f"{type(node.value).__name__} constants are not BPF values")
        if isinstance(node, ast.Name):
            found = self.lookup(node)
            if isinstance(found, Local):
                return Val(found.type, found.reg)
            if isinstance(found, (Val, Mem)):
                return found
            if isinstance(found, int) and not isinstance(found, bool):
                return Val(literal_type(found), const=found)
            raise self.err(node, f"{node.id} is not a value")
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            operand = node.operand
            if isinstance(node.op, ast.USub) and isinstance(operand, ast.Constant) \
                    and type(operand.value) is int and operand.value <= 1 << 63:  # fmt: skip
                # -2147483648 is one int constant, as Python reads it (not -(long)2^31)
                return Val(literal_type(-operand.value), const=-operand.value)
            return self.unary(node)
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            return self.truth_value(node)
        if isinstance(node, ast.IfExp):
            return self.ifexp(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        raise self.err(node, f"{type(node).__name__} expressions are not supported in BPF code")

    def scalar(self, node: ast.expr) -> Val:
        """An integer or pointer value (memory is loaded)."""
        return self.rvalue(self.expr(node), node)

    def integer(self, node: ast.expr) -> Val:
        v = self.deref(self.scalar(node), node)
        if not isinstance(v.type, IntType):
            raise self.err(node, f"an integer is needed here, not {v.type}")
        return v

    def rvalue(self, e: Expr, node: Optional[ast.AST]) -> Val:
        return e if isinstance(e, Val) else self.load(e, node)

    def deref(self, v: Val, node: Optional[ast.AST]) -> Val:
        """A map value pointer used as a number is its value (after the None check)."""
        if isinstance(v.type, PtrType) and isinstance(v.type.target, IntType) \
                and not v.type.kernel and v.reg is not None:  # fmt: skip
            return self.load(Mem(v.type.target, v.reg), node)
        return v

    def load(self, m: Mem, node: Optional[ast.AST]) -> Val:
        t = m.type
        if isinstance(t, PtrType) or (isinstance(t, IntType)):
            r = self.new()
            signed = isinstance(t, IntType) and t.signed
            if m.core is not None and not self.direct:
                # raw_tp, kprobe: kernel pointers are plain numbers to the verifier, so
                # copy the field (offset and size relocated) with a probe read, as
                # BPF_CORE_READ does, into a zeroed slot
                slot = self.fn.frame_obj(8, 8, "probe")
                self.emit(ir.Store(slot, 0, 0, 8))
                size = self.new()
                self.emit(ir.CoreValue(size, "field_size", m.core))
                dst = self.new()
                self.emit(ir.Addr(dst, slot))
                src = self.new()
                assert isinstance(m.base, ir.VReg)
                self.emit(ir.CoreOffset(src, m.base, m.core))
                self.emit(ir.Call(None, "probe_read_kernel", [dst, size, src]))
                self.emit(ir.Load(r, slot, 0, t.size, signed))
            elif m.core is not None:
                self.emit(ir.Load(r, m.base, 0, t.size, signed, core=m.core))
            else:
                self.emit(ir.Load(r, m.base, m.off, t.size, signed))
            return Val(t, r)
        raise self.err(node, f"a {t} is not a number: use one of its fields or elements")

    def address(self, m: Mem) -> ir.VReg:
        """``&place`` in a register."""
        r = self.new()
        if isinstance(m.base, ir.FrameObj):
            self.emit(ir.Addr(r, m.base, m.off))
        elif m.core is not None:
            self.emit(ir.CoreOffset(r, m.base, m.core))
        elif m.off:
            self.emit(ir.Bin("add", r, m.base, m.off))
        else:
            self.emit(ir.Mov(r, m.base))
        return r

    # -- arithmetic ------------------------------------------------------------
    def binop(self, node: ast.BinOp) -> Val:
        op = _BINOPS.get(type(node.op))
        if op is None:
            hint = " (use // : integer division truncates, as in C)" if isinstance(
                node.op, ast.Div) else ""  # fmt: skip
            raise self.err(node, f"operator {type(node.op).__name__} is not supported{hint}")
        a, b = self.integer(node.left), self.integer(node.right)
        return self.arith(op, a, b, node)

    def arith(self, op: str, a: Val, b: Val, node: ast.AST) -> Val:
        assert isinstance(a.type, IntType) and isinstance(b.type, IntType)
        if op in ("lsh", "rsh"):
            t = promote(a.type)
            a = self.convert(a, t)
        else:
            t = common(a.type, b.type)
            a, b = self.convert(a, t), self.convert(b, t)
        if a.const is not None and b.const is not None:
            return Val(t, const=fold(op, t, a.const, b.const))
        if b.const == 0 and op in ("div", "mod"):  # the verifier refuses a constant 0 divisor
            return Val(t, const=0) if op == "div" else a
        if t.signed and op in ("div", "mod", "rsh"):
            op = {"div": "sdiv", "mod": "smod", "rsh": "arsh"}[op]
        w32 = t.size == 4 and op in ("lsh", "rsh", "arsh")
        if b.const is not None:
            if op in ("lsh", "rsh", "arsh"):
                rhs: ir.Operand = b.const & (t.bits - 1)
            else:
                rhs = t.rep64(b.const)
                if rhs not in _FITS32:
                    rhs = self.reg_of(Val(t, const=b.const))
        else:
            assert b.reg is not None
            rhs = b.reg
        out = self.new()
        self.emit(ir.Bin(op, out, self.reg_of(a), rhs, w32))
        if t.size == 4 and (t.signed or op in ("add", "sub", "mul")):
            out = self.ext(out, t)
        return Val(t, out)

    def unary(self, node: ast.UnaryOp) -> Val:
        if isinstance(node.op, ast.Not):
            return self.truth_value(node)
        v = self.integer(node.operand)
        assert isinstance(v.type, IntType)
        t = promote(v.type)
        v = self.convert(v, t)
        if isinstance(node.op, ast.UAdd):
            return v
        if v.const is not None:
            return Val(t, const=t.wrap(-v.const if isinstance(node.op, ast.USub) else ~v.const))
        out = self.new()
        if isinstance(node.op, ast.USub):
            self.emit(ir.Un("neg", out, self.reg_of(v)))
        else:
            self.emit(ir.Bin("xor", out, self.reg_of(v), -1))
        return Val(t, self.ext(out, t) if t.size == 4 else out)

    def ifexp(self, node: ast.IfExp) -> Val:
        """``a if c else b``: only the chosen side runs; both convert to a common type."""
        saved = self.fn.insns
        self.fn.insns = []
        a = self.deref(self.scalar(node.body), node.body)
        a_code = self.fn.insns
        self.fn.insns = []
        b = self.deref(self.scalar(node.orelse), node.orelse)
        b_code = self.fn.insns
        self.fn.insns = saved
        if isinstance(a.type, IntType) and isinstance(b.type, IntType):
            t: LangType = common(a.type, b.type)
        elif a.type.name == b.type.name or b.type.size == 8:
            t = a.type
        else:
            raise self.err(node, f"the two sides have types {a.type} and {b.type}")
        out = self.new()
        other, end = self.new_label("else"), self.new_label("endif")
        self.cond_jump(node.test, other, False)
        self.fn.insns.extend(a_code)
        self.emit(ir.Mov(out, self.operand(self.convert(a, t))))
        self.emit(ir.Jmp(end))
        self.emit(ir.Label(other))
        self.fn.insns.extend(b_code)
        self.emit(ir.Mov(out, self.operand(self.convert(b, t))))
        self.emit(ir.Label(end))
        return Val(t, out)

    def operand(self, v: Val) -> ir.Operand:
        if v.const is not None:
            return v.type.rep64(v.const) if isinstance(v.type, IntType) else v.const
        assert v.reg is not None
        return v.reg

    # -- conditions --------------------------------------------------------------
    def truth_value(self, node: ast.expr) -> Val:
        """A condition used as a number: int 1 or 0, as C's ``&&``, ``<``, ``!``."""
        const = self.const_truth(node)
        if const is not None:
            return Val(s32, const=int(const))
        out = self.new()
        end = self.new_label("bool")
        self.emit(ir.Mov(out, 1))
        self.cond_jump(node, end, True)
        self.emit(ir.Mov(out, 0))
        self.emit(ir.Label(end))
        return Val(s32, out)

    def const_truth(self, node: ast.expr) -> Optional[bool]:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, bool)):
            return bool(node.value)
        return None

    def cond_jump(self, node: ast.expr, target: str, when: bool) -> None:
        """Jump to ``target`` if ``node`` is ``when``; fall through otherwise."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.cond_jump(node.operand, target, not when)
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            if is_and != when:  # and/False, or/True: any operand decides
                for value in node.values:
                    self.cond_jump(value, target, when)
                return None
            skip = self.new_label("sc")
            for value in node.values[:-1]:
                self.cond_jump(value, skip, not when)
            self.cond_jump(node.values[-1], target, when)
            self.emit(ir.Label(skip))
            return None
        if isinstance(node, ast.Compare):
            return self.compare_jump(node, target, when)
        v = self.deref(self.scalar(node), node)
        if v.const is not None:
            if bool(v.const) == when:
                self.emit(ir.Jmp(target))
            return None
        assert v.reg is not None
        self.emit(ir.CJmp("jne" if when else "jeq", v.reg, 0, target))
        return None

    def compare_jump(self, node: ast.Compare, target: str, when: bool) -> None:
        if len(node.ops) > 1:  # a < b < c: each pair, b evaluated once
            pairs = []
            left = node.left
            lhs = self.deref(self.scalar(left), left)
            for op, right in zip(node.ops, node.comparators):
                rhs = self.deref(self.scalar(right), right)
                pairs.append((op, lhs, rhs))
                lhs = rhs
            # all pairs must hold
            if when:
                skip = self.new_label("cmp")
                for op, a, b in pairs[:-1]:
                    self.compare_values(op, a, b, skip, False, node)
                op, a, b = pairs[-1]
                self.compare_values(op, a, b, target, True, node)
                self.emit(ir.Label(skip))
            else:
                for op, a, b in pairs:
                    self.compare_values(op, a, b, target, False, node)
            return
        op = node.ops[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            right = node.comparators[0]
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.err(node, "'is' compares with None only")
            v = self._pointer(node.left)
            is_none = isinstance(op, ast.Is)
            assert v.reg is not None
            self.emit(ir.CJmp("jeq" if is_none == when else "jne", v.reg, 0, target))
            return
        a = self.deref(self.scalar(node.left), node.left)
        b = self.deref(self.scalar(node.comparators[0]), node.comparators[0])
        self.compare_values(op, a, b, target, when, node, once=True)

    def _pointer(self, node: ast.expr) -> Val:
        v = self.expr(node)
        if isinstance(v, Mem) and isinstance(v.type, PtrType):
            v = self.load(v, node)
        if not isinstance(v, Val) or not isinstance(v.type, PtrType) or v.reg is None:
            raise self.err(node, f"{ast.unparse(node)} is not a pointer that may be None")
        return v

    def compare_values(self, op: ast.cmpop, a: Val, b: Val, target: str, when: bool,
                       node: ast.AST, once: bool = False) -> None:  # fmt: skip
        """``once``: the operands are used by this compare only (not a chain's middle)."""
        jop = _CMP.get(type(op))
        if jop is None:
            raise self.err(node, f"comparison {type(op).__name__} is not supported")
        if isinstance(a.type, IntType) and isinstance(b.type, IntType):
            t = common(a.type, b.type)
            if once:
                b = self.convert_now(b, t)  # b was computed last: its load may change type
                a = self.convert_now(a, t) if b.reg is None else self.convert(a, t)
            else:
                a, b = self.convert(a, t), self.convert(b, t)
            signed = t.signed
        elif isinstance(a.type, PtrType) or isinstance(b.type, PtrType):
            signed = False
            t = u64
        else:
            raise self.err(node, f"cannot compare {a.type} with {b.type}")
        if not when:
            jop = _NEGATE[jop]
        if a.const is not None and b.const is not None:
            if compare(jop, a.const, b.const):
                self.emit(ir.Jmp(target))
            return
        if a.const is not None:
            a, b, jop = b, a, _SWAP[jop]
        if signed and jop not in ("jeq", "jne"):
            jop = "js" + jop[1:]
        rhs: ir.Operand
        if b.const is not None:
            rhs = t.rep64(b.const)
            if rhs not in _FITS32:
                rhs = self.reg_of(b)
        else:
            assert b.reg is not None
            rhs = b.reg
        self.emit(ir.CJmp(jop, self.reg_of(a), rhs, target))

    # -- casts -------------------------------------------------------------------
    def cast(self, node: ast.Call, to: LangType) -> Val:
        if len(node.args) != 1 or node.keywords:
            raise self.err(node, f"{to.name}(x) takes one argument")
        return self.convert(self.integer(node.args[0]), to, node)

    def type_of_annotation(self, node: ast.expr) -> LangType:
        """The type an annotation names: ``u32``, ``Event``, ``char[16]``."""
        if isinstance(node, ast.Subscript):
            elem = self.type_of_annotation(node.value)
            n = self.const_int(node.slice)
            return ArrayType(elem, n)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
            return self.type_of_annotation(node)
        if isinstance(node, ast.Name):
            t = resolve_type(self.lookup_object(node))
            if t is not None:
                return t
        raise self.err(node, f"not a BPF type: {ast.unparse(node)}")

    def lookup_object(self, node: ast.Name) -> Any:
        raise NotImplementedError

    def const_int(self, node: ast.expr) -> int:
        v = self.expr(node)
        if not isinstance(v, Val) or v.const is None or not isinstance(v.type, IntType):
            raise self.err(node, "a constant integer is needed here")
        return v.const


__all__ = ["Exprs", "fold", "StructType"]
