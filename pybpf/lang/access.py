"""Calls, fields, elements and maps: everything that touches memory or calls out.

``m[k] = v`` is ``bpf_map_update_elem``, ``m.get(k)`` ``bpf_map_lookup_elem`` (a pointer
that may be None), ``del m[k]`` ``bpf_map_delete_elem``, ``m[k] += n`` an atomic add
into the value (inserting ``n`` into a hash map that has no ``k`` yet).  Kernel struct
fields are CO-RE relocated loads; ``dst.comm = task.comm`` copies a string with
``bpf_probe_read_kernel_str``.
"""

from __future__ import annotations

import ast
from typing import Any, Optional

from .. import uapi
from . import ir
from .builtins import HELPER_RESULTS, Builtin, cast, field_exists, kernel_struct, sizeof
from .kernel import KernelStruct, KField, KStruct
from .mapdefs import MapDecl, PerfEventArray, ReadOnly, RingBuf
from .types import (
    INT_TYPES,
    ArrayType,
    IntType,
    LangType,
    PtrType,
    Struct,
    StructType,
    char,
    resolve_type,
    s32,
    s64,
    u64,
)
from .values import Expr, Mem, Val

_BPF_F_CURRENT_CPU = 0xFFFFFFFF


class Access:
    """Mixin of the function compiler (see :class:`~.front.FunctionCompiler`)."""

    unit: Any
    fn: ir.Function
    ctx: Optional[ir.VReg]
    locals: dict[str, Any]

    # -- names -------------------------------------------------------------------
    def global_object(self, node: ast.expr) -> Any:
        """The module-level object an expression names (not a local), or None."""
        if isinstance(node, ast.Name) and node.id not in self.locals:
            try:
                return self.lookup_object(node)
            except Exception:
                return None
        return None

    def is_map(self, node: ast.expr) -> bool:
        return isinstance(self.global_object(node), MapDecl)

    def map_of(self, node: ast.expr) -> MapDecl:
        m = self.global_object(node)
        if not isinstance(m, MapDecl):
            raise self.err(node, "not a map")
        if not m.name:
            m.name = node.id
        self.unit.use_map(m)
        return m

    # -- calls -------------------------------------------------------------------
    def call(self, node: ast.Call) -> Expr:
        func = node.func
        if isinstance(func, ast.Attribute):
            if self.is_map(func.value):
                return self.map_method(node, self.map_of(func.value), func.attr)
            owner = self.global_object(func.value)
            if owner is not None and getattr(owner, "__class__", None).__name__ == "_Helpers":
                return self.helper(node, func.attr)
            raise self.err(node, f"cannot call {ast.unparse(func)}")
        if not isinstance(func, ast.Name):
            raise self.err(node, "call of a computed function")
        if func.id in self.locals:
            raise self.err(node, f"{func.id} is a local, not a function")
        try:
            obj = self.lookup_object(func)
        except Exception:
            if self.unit.has_helper(func.id):
                return self.helper(node, func.id)
            raise
        if isinstance(obj, IntType):
            return self.cast(node, obj)
        if obj is int:
            return self.cast(node, s64)
        if isinstance(obj, type) and issubclass(obj, Struct):
            return self.construct(node) or Val(s32, const=0)
        if obj is sizeof:
            return Val(u64, const=self.sizeof(node))
        if obj is field_exists:
            return self.field_exists(node)
        if obj is cast:
            return self.kernel_cast(node)
        if isinstance(obj, Builtin):
            return self.helper(node, obj.name)
        sub = getattr(obj, "_bpf_function", None)
        if sub is not None:
            return self.call_sub(node, obj)
        raise self.err(node, f"{func.id} is not a BPF function, helper or type")

    def args(self, node: ast.Call) -> list[ir.Operand]:
        """Helper arguments: numbers by value, places (structs, arrays) by address."""
        out: list[ir.Operand] = []
        for arg in node.args:
            if self.is_map(arg):  # bpf_ringbuf_query(&events, ...)
                out.append(self.map_ref(self.map_of(arg)))
                continue
            e = self.expr(arg)
            if isinstance(e, Mem) and not isinstance(e.type, (IntType, PtrType)):
                out.append(self.address(e))
            else:
                out.append(self.operand(self.rvalue(e, arg)))
        return out

    def helper(self, node: ast.Call, name: str) -> Val:
        name = name[4:] if name.startswith("bpf_") else name
        if not self.unit.has_helper(name):
            raise self.err(node, f"no BPF helper bpf_{name}() on the target kernel")
        if len(node.args) > 5 or node.keywords:
            raise self.err(node, "a helper takes at most 5 positional arguments")
        args = self.args(node)
        t = INT_TYPES[HELPER_RESULTS.get(name, "s64")]
        r = self.new()
        self.emit(ir.Call(r, name, args))
        return Val(t, r)

    def call_sub(self, node: ast.Call, pyfn: Any) -> Val:
        name, params, ret = self.unit.subprogram(pyfn)
        if len(node.args) != len(params) or node.keywords:
            raise self.err(node, f"{name}() takes {len(params)} arguments")
        args = []
        for arg, (_, t) in zip(node.args, params):
            v = self.scalar(arg)
            v = self.convert_now(self.deref(v, arg) if isinstance(t, IntType) else v, t, arg)
            args.append(self.operand(v))
        r = self.new()
        self.emit(ir.Call(r, name, args, sub=True))
        self.fn.calls.add(name)
        return Val(ret, r)

    def sizeof(self, node: ast.Call) -> int:
        if len(node.args) != 1:
            raise self.err(node, "sizeof(x) takes one argument")
        arg = node.args[0]
        obj = self.global_object(arg)
        t = resolve_type(obj) if obj is not None else None
        if t is None:
            e = self.expr(arg)
            t = e.type
        return t.size

    def field_exists(self, node: ast.Call) -> Val:
        if len(node.args) != 1:
            raise self.err(node, "field_exists(p.field) takes one argument")
        arg = node.args[0]
        if isinstance(arg, ast.Attribute):
            owner = self.global_object(arg.value)
            if isinstance(owner, type) and issubclass(owner, KernelStruct):
                ks = self.unit.kernel.declared(owner._kstruct)
                self.unit.kernel.member(ks, arg.attr)
                e: Expr = Mem(u64, ir.VReg(-1), core=self.unit.field(KField(ks, (arg.attr,))))
            else:
                e = self.expr(arg)
        else:
            e = self.expr(arg)
        if not isinstance(e, Mem) or e.core is None:
            raise self.err(node, "field_exists() needs a kernel struct field")
        r = self.new()
        self.emit(ir.CoreValue(r, "field_exists", e.core))
        return Val(s32, r)

    def kernel_cast(self, node: ast.Call) -> Val:
        if len(node.args) != 2:
            raise self.err(node, "cast(p, T) takes two arguments")
        v = self.scalar(node.args[0])
        target = self.kernel_type(node.args[1])
        return Val(PtrType(target, kernel=True), self.reg_of(v))

    def kernel_type(self, node: ast.expr) -> KStruct:
        obj = self.global_object(node)
        if isinstance(obj, type) and issubclass(obj, KernelStruct):
            return self.unit.kernel.declared(obj._kstruct)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.unit.kernel.struct(node.value)
        if isinstance(node, ast.Call) and self.global_object(node.func) is kernel_struct:
            return self.kernel_type(node.args[0])
        raise self.err(node, "a kernel struct type is needed here")

    # -- struct values -----------------------------------------------------------
    def construct(self, value: ast.expr) -> Optional[Mem]:
        """``Event()`` or ``Event(pid=1)``: a zeroed struct on the stack."""
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
            return None
        obj = self.global_object(value.func)
        if not (isinstance(obj, type) and issubclass(obj, Struct)):
            return None
        st = obj._lang
        if value.args:
            raise self.err(value, f"{st.name}(...) takes field=value arguments")
        place = self.new_struct(st, st.name.lower(), value)
        for kw in value.keywords:
            field = st.field(kw.arg or "")
            if field is None:
                raise self.err(kw, f"struct {st.name} has no field {kw.arg}")
            off, ft = field
            self.store(Mem(ft, place.base, off), kw.value, kw)
        return place

    def copy_into(self, place: Mem, value: ast.expr, node: ast.AST) -> None:
        """Struct and array assignment: a byte copy, or a probe read from kernel memory."""
        self.copy_from(place, self.expr(value), node)

    def copy_from(self, place: Mem, src: Expr, node: ast.AST) -> None:
        if not isinstance(src, Mem) or src.type.size != place.type.size and not src.kernel:
            raise self.err(node, f"cannot assign {src.type} to {place.type}")
        if src.kernel:
            n = min(place.type.size, src.type.size)
            is_str = isinstance(place.type, ArrayType) and place.type.elem is char
            helper = "probe_read_kernel_str" if is_str else "probe_read_kernel"
            args = [self.address(place), n, self.address(src)]
            self.emit(ir.Call(None, helper, args))
            return
        off = 0
        for size in (8, 4, 2, 1):
            while place.type.size - off >= size:
                r = self.new()
                self.emit(ir.Load(r, src.base, src.off + off, size))
                self.emit(ir.Store(place.base, place.off + off, r, size))
                off += size

    # -- fields and elements -----------------------------------------------------
    def attribute(self, node: ast.Attribute) -> Expr:
        owner = self.global_object(node.value)
        if isinstance(owner, type) and issubclass(owner, ReadOnly):
            return self.rodata(node, owner)
        base = self.expr(node.value)
        name = node.attr
        if isinstance(base, Mem) and isinstance(base.type, StructType):
            field = base.type.field(name)
            if field is None:
                raise self.err(node, f"struct {base.type.name} has no field {name}")
            return Mem(field[1], base.base, base.off + field[0], atomic=base.atomic)
        if isinstance(base, Mem) and isinstance(base.type, KStruct) and base.core is not None:
            t = self.unit.kernel.member(base.type, name)
            return Mem(t, base.base, core=self.unit.field(base.core.extend(name)), kernel=True)
        if isinstance(base, Mem):
            base = self.rvalue(base, node.value)
        if isinstance(base, Val) and isinstance(base.type, PtrType):
            target = base.type.target
            reg = self.reg_of(base)
            if isinstance(target, StructType):
                field = target.field(name)
                if field is None:
                    raise self.err(node, f"struct {target.name} has no field {name}")
                return Mem(field[1], reg, field[0], atomic=True)
            if isinstance(target, KStruct):
                t = self.unit.kernel.member(target, name)
                return Mem(t, reg, core=self.unit.field(KField(target, (name,))), kernel=True)
        raise self.err(node, f"{ast.unparse(node.value)} has no fields")

    def subscript(self, node: ast.Subscript) -> Expr:
        if self.is_map(node.value):
            return self.map_read(node)
        base = self.expr(node.value)
        if not isinstance(base, Mem) or not isinstance(base.type, ArrayType):
            raise self.err(node, "only arrays and maps can be indexed")
        index = self.const_int(node.slice)
        t = base.type
        if not 0 <= index < t.n:
            raise self.err(node.slice, f"index {index} out of range [0, {t.n})")
        if base.core is not None:
            return Mem(t.elem, base.base, core=self.unit.field(base.core.extend(index)),
                       kernel=True)  # fmt: skip
        return Mem(t.elem, base.base, base.off + index * t.elem.size, kernel=base.kernel)

    def rodata(self, node: ast.Attribute, cls: type) -> Expr:
        layout = self.unit.use_rodata(cls)
        if node.attr not in cls._vars:
            raise self.err(node, f"{cls.__name__} has no global {node.attr}")
        t = cls._vars[node.attr]
        r = self.new()
        self.emit(ir.LdMap(r, layout.MAP_NAME, True, layout.offset(node.attr)))
        return Mem(t, r, kernel=True)

    # -- maps --------------------------------------------------------------------
    def key_addr(self, m: MapDecl, key: ast.expr) -> ir.VReg:
        return self.stack_value(m.key, key, "key")

    def stack_value(self, t: Optional[LangType], value: ast.expr, what: str) -> ir.VReg:
        """The address of ``value`` as a ``t`` on the stack (for a helper to read)."""
        assert t is not None
        if isinstance(t, IntType):
            v = self.convert(self.integer(value), t, value)
            obj = self.fn.frame_obj(8, 8, what)
            self.emit(ir.Store(obj, 0, self.operand(v), t.size))
            r = self.new(what)
            self.emit(ir.Addr(r, obj))
            return r
        e = self.expr(value)
        if not isinstance(e, Mem) or e.type is not t:
            raise self.err(value, f"a {t.name} is needed here")
        return self.address(e)

    def map_call(self, helper: str, args: list[ir.Operand], t: LangType = s64) -> Val:
        r = self.new()
        self.emit(ir.Call(r, helper, args))
        return Val(t, r)

    def map_ref(self, m: MapDecl) -> ir.VReg:
        r = self.new(m.name)
        self.emit(ir.LdMap(r, m.name))
        return r

    def lookup_ptr(self, m: MapDecl, key: ir.VReg) -> Val:
        return self.map_call("map_lookup_elem", [self.map_ref(m), key],
                             PtrType(m.value, nullable=True))  # fmt: skip

    def map_method(self, node: ast.Call, m: MapDecl, method: str) -> Val:
        if method in ("get", "lookup") and len(node.args) == 1:
            return self.lookup_ptr(m, self.key_addr(m, node.args[0]))
        if method == "output" and len(node.args) in (1, 2):
            arg = self.expr(node.args[0])
            if not isinstance(arg, Mem):
                raise self.err(node, "output() sends a struct or array")
            flags = self.integer(node.args[1]) if len(node.args) == 2 else Val(u64, const=0)
            data = self.address(arg)
            if isinstance(m, RingBuf):
                return self.map_call("ringbuf_output", [self.map_ref(m), data, arg.type.size,
                                                        self.operand(flags)])
            if isinstance(m, PerfEventArray):
                if self.ctx is None:
                    raise self.err(node, "perf output needs the program's context")
                return self.map_call("perf_event_output", [self.ctx, self.map_ref(m),
                                     _BPF_F_CURRENT_CPU, data, arg.type.size])  # fmt: skip
        if method == "delete" and len(node.args) == 1:
            key = self.key_addr(m, node.args[0])
            return self.map_call("map_delete_elem", [self.map_ref(m), key])
        raise self.err(node, f"map {m.name} has no method {method}() of that form")

    def map_read(self, node: ast.Subscript) -> Val:
        """``m[k]`` as a number: the value, or 0 when ``k`` is not in the map."""
        m = self.map_of(node.value)
        if not isinstance(m.value, IntType):
            raise self.err(node, f"{m.name}[k] reads numbers; use {m.name}.get(k)")
        p = self.lookup_ptr(m, self.key_addr(m, node.slice))
        out = self.new()
        end = self.new_label("miss")
        self.emit(ir.Mov(out, 0))
        assert p.reg is not None
        self.emit(ir.CJmp("jeq", p.reg, 0, end))
        self.emit(ir.Load(out, p.reg, 0, m.value.size, m.value.signed))
        self.emit(ir.Label(end))
        return Val(m.value, out)

    def map_store(self, target: ast.Subscript, value: ast.expr, node: ast.AST) -> None:
        m = self.map_of(target.value)
        key = self.key_addr(m, target.slice)
        val = self.stack_value(m.value, value, "value")
        self.map_call("map_update_elem", [self.map_ref(m), key, val, uapi.BPF_ANY])

    def map_update_op(self, target: ast.Subscript, op: str, value: ast.expr,
                      node: ast.AST) -> None:  # fmt: skip
        """``m[k] += n``: an atomic add into the value; a hash map without ``k`` gets
        ``n`` inserted (BPF_NOEXIST), as libbpf-tools' ``bpf_map_lookup_or_try_init``."""
        m = self.map_of(target.value)
        t = m.value
        if not isinstance(t, IntType) or op not in ("add", "sub") or t.size not in (4, 8):
            raise self.err(node, "m[k] += n / -= n on 4- or 8-byte integer values only")
        key = self.key_addr(m, target.slice)
        n = self.convert(self.integer(value), t, value)
        if op == "sub":
            n = self.arith("sub", Val(t, const=0), n, node)
        n_reg = self.reg_of(n)
        p = self.lookup_ptr(m, key)
        assert p.reg is not None
        miss, end = self.new_label("miss"), self.new_label("done")
        self.emit(ir.CJmp("jeq", p.reg, 0, miss))
        self.emit(ir.AtomicAdd(p.reg, 0, n_reg, t.size))
        self.emit(ir.Jmp(end))
        self.emit(ir.Label(miss))
        if m.hash_like:
            obj = self.fn.frame_obj(8, 8, "init")
            self.emit(ir.Store(obj, 0, n_reg, t.size))
            addr = self.new()
            self.emit(ir.Addr(addr, obj))
            self.map_call("map_update_elem", [self.map_ref(m), key, addr, uapi.BPF_NOEXIST])
        self.emit(ir.Label(end))

    def delete(self, target: ast.expr) -> None:
        if not (isinstance(target, ast.Subscript) and self.is_map(target.value)):
            raise self.err(target, "del works on map elements only")
        m = self.map_of(target.value)
        self.map_call("map_delete_elem", [self.map_ref(m), self.key_addr(m, target.slice)])


__all__ = ["Access", "KStruct", "StructType", "ArrayType"]
