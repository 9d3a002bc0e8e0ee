"""The front end: a decorated Python function's AST, type-checked, into IR.

The function is parsed, never run.  Names resolve, in order, to the function's
locals, then to the module's globals (types, maps, read-only globals, constants,
other BPF functions), then to BPF helpers of the target kernel by name.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import textwrap
from typing import Any, Callable, Optional

from . import ir
from .access import Access
from .builtins import unroll
from .errors import CompileError, Source
from .exprs import Exprs
from .types import ArrayType, IntType, LangType, PtrType, StructType, s32
from .values import Expr, Local, Mem, Val

_AUG = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.FloorDiv: "div", ast.Mod: "mod",
        ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor", ast.LShift: "lsh",
        ast.RShift: "rsh"}  # fmt: skip


def parse_function(pyfn: Callable[..., Any]) -> tuple[ast.FunctionDef, Source]:
    """The function's AST and where its text sits in its file."""
    given = getattr(pyfn, "_bpf_source", None)
    if given is not None:  # (filename, first line, text): functions made from text
        filename, first, text = given
        node = ast.parse(text).body[0]
        if not isinstance(node, ast.FunctionDef):
            raise CompileError(f"{filename}: not a function definition")
        return node, Source(filename, first, text)
    code = getattr(pyfn, "__code__", None)
    filename = getattr(code, "co_filename", "")
    found = _from_file(filename, code.co_firstlineno) if code is not None else None
    if found is not None:  # the file parsed once, the function found by its line
        if found.name != pyfn.__name__:
            raise CompileError(f"{filename} changed since {pyfn.__name__} was imported")
        return found, Source(filename, 1, "")
    try:
        lines, first = inspect.getsourcelines(pyfn)
        filename = inspect.getsourcefile(pyfn) or "<unknown>"
    except (OSError, TypeError) as exc:
        raise CompileError(f"no source for {getattr(pyfn, '__name__', pyfn)!r}: {exc}") from None
    text = textwrap.dedent("".join(lines))
    tree = ast.parse(text)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise CompileError(f"{pyfn!r} is not a plain function")
    return node, Source(filename, first, text)


_FILES: dict[tuple[str, float], dict[int, ast.FunctionDef]] = {}


def _from_file(filename: str, line: int) -> Optional[ast.FunctionDef]:
    """The FunctionDef whose ``def`` (or first decorator) is at ``line`` of ``filename``.

    One parse per file (cheaper than ``inspect.getsource``'s tokenizing per function);
    keyed by modification time, so an edited file is parsed again."""
    try:
        key = (filename, os.stat(filename).st_mtime)
    except OSError:
        return None
    index = _FILES.get(key)
    if index is None:
        try:
            with open(filename, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename)
        except (OSError, SyntaxError, UnicodeDecodeError):
            return None
        index = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                index[first] = node
                index.setdefault(node.lineno, node)
        _FILES[key] = index
    return index.get(line)


class FunctionCompiler(Access, Exprs):
    """Compiles one function into an :class:`ir.Function`."""

    _labels = itertools.count()

    def __init__(self, unit: Any, pyfn: Callable[..., Any], node: ast.FunctionDef,
                 source: Source, name: str) -> None:  # fmt: skip
        self.unit = unit  # the compilation unit: maps, kernel types, subprograms, helpers
        self.pyfn, self.node, self.src = pyfn, node, source
        self.globals: dict[str, Any] = getattr(pyfn, "__globals__", {})
        self.fn = ir.Function(name)
        self.fn.line = source.line_of(node)
        self.fn.source = source
        self.locals: dict[str, Any] = {}
        self.line = self.fn.line
        self.depth = 0
        self.loops: list[tuple[str, str]] = []  # (continue, break) labels
        self.hoisted: list[ir.Insn] = []
        self.ret_type: LangType = s32
        self.ctx: Optional[ir.VReg] = None

    # -- plumbing ----------------------------------------------------------------
    def emit(self, insn: ir.Insn) -> None:
        insn.line = self.line
        self.fn.insns.append(insn)

    def err(self, node: Optional[ast.AST], msg: str) -> CompileError:
        return self.src.error(node, msg)

    def new_label(self, hint: str) -> str:
        return f"{hint}{next(self._labels)}"

    def lookup(self, node: ast.Name) -> Any:
        if node.id in self.locals:
            return self.locals[node.id]
        return self.lookup_object(node)

    def lookup_object(self, node: ast.Name) -> Any:
        if node.id in self.globals:
            return self.globals[node.id]
        builtins = self.globals.get("__builtins__", {})
        if not isinstance(builtins, dict):
            builtins = vars(builtins)
        if node.id in builtins and node.id in ("int", "bool", "len", "range"):
            return builtins[node.id]
        raise self.err(node, f"name {node.id!r} is not defined")

    # -- the function ------------------------------------------------------------
    def compile_params(self, params: list[tuple[str, LangType]]) -> None:
        """Parameters arrive in r1-r5, each normalized to its type by the caller."""
        for index, (name, t) in enumerate(params):
            r = self.new(name)
            self.emit(ir.Param(r, index))
            self.locals[name] = Local(t, r)

    def compile_body(self) -> ir.Function:
        node = self.node
        if node.returns is not None:
            self.ret_type = self.type_of_annotation(node.returns)
        self.block(node.body)
        if not self.fn.insns or not self.fn.insns[-1].ends_block:
            self.emit(ir.Ret(0))
        # zero-initialize, at entry, the locals first assigned inside a block: on paths
        # that skip the assignment they read as 0, not as an uninitialized register
        nparams = sum(isinstance(i, ir.Param) for i in self.fn.insns)
        self.fn.insns[nparams:nparams] = self.hoisted
        return self.fn

    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.line = self.src.line_of(stmt)
            try:
                self.stmt(stmt)
            except CompileError as exc:
                if exc.where is not None:
                    raise
                raise self.err(stmt, exc.bare) from None

    def stmt(self, node: ast.stmt) -> None:  # noqa: C901 - one case per statement kind
        if isinstance(node, ast.Return):
            self.ret(node)
        elif isinstance(node, ast.AnnAssign):
            if not isinstance(node.target, ast.Name):
                raise self.err(node, "annotated assignment to a plain name only")
            t = self.type_of_annotation(node.annotation)
            self.declare(node.target, t, node.value, node)
        elif isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise self.err(node, "one target per assignment")
            self.assign(node.targets[0], node.value, node)
        elif isinstance(node, ast.AugAssign):
            self.augassign(node)
        elif isinstance(node, ast.If):
            self.if_(node)
        elif isinstance(node, ast.While):
            self.while_(node)
        elif isinstance(node, ast.For):
            self.for_(node)
        elif isinstance(node, ast.Break):
            if not self.loops:
                raise self.err(node, "break outside a loop")
            self.emit(ir.Jmp(self.loops[-1][1]))
        elif isinstance(node, ast.Continue):
            if not self.loops:
                raise self.err(node, "continue outside a loop")
            self.emit(ir.Jmp(self.loops[-1][0]))
        elif isinstance(node, ast.Pass):
            pass
        elif isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # docstring
            if not isinstance(node.value, ast.Call):
                raise self.err(node, "an expression statement must be a call")
            self.call(node.value)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.delete(target)
        else:
            raise self.err(node, f"{type(node).__name__} statements are not supported in BPF code")

    def ret(self, node: ast.Return) -> None:
        if node.value is None:
            self.emit(ir.Ret(0))
            return
        v = self.convert(self.integer(node.value), self.ret_type, node)
        last = self.fn.insns[-1] if self.fn.insns else None
        if isinstance(last, ir.Call) and last.dst is not None and last.dst is v.reg \
                and v.reg.id not in self.local_regs():  # return f(x): r0 holds it already
            last.dst = None
            self.emit(ir.Ret(None))
            return
        self.emit(ir.Ret(self.operand(v)))

    # -- assignment --------------------------------------------------------------
    def declare(self, target: ast.Name, t: LangType, value: Optional[ast.expr],
                node: ast.AST, zero: bool = True) -> None:  # fmt: skip
        name = target.id
        old = self.locals.get(name)
        if old is not None:
            if getattr(old, "type", None) is not t:
                raise self.err(node, f"{name} is already a {old.type}, it cannot become a {t}")
        elif isinstance(t, (IntType, PtrType)):
            r = self.new(name)
            self.locals[name] = Local(t, r)
            if self.depth:
                zero = ir.Mov(r, 0)
                zero.line = self.line
                self.hoisted.append(zero)
        else:
            self.locals[name] = self.new_struct(t, name, node)
            if value is None:
                return
        if value is None:
            if isinstance(t, (IntType, PtrType)) and zero:
                self.emit(ir.Mov(self.locals[name].reg, 0))
            return
        self.assign(target, value, node)

    def new_struct(self, t: LangType, name: str, node: ast.AST) -> Mem:
        """A struct or array local on the stack, zeroed as ``struct event e = {};``."""
        obj = self.fn.frame_obj(t.size, 8, name)
        for off in range(0, t.size - t.size % 8, 8):
            self.emit(ir.Store(obj, off, 0, 8))
        off = t.size - t.size % 8
        for size in (4, 2, 1):
            if t.size - off >= size:
                self.emit(ir.Store(obj, off, 0, size))
                off += size
        return Mem(t, obj)

    def assign(self, target: ast.expr, value: ast.expr, node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            local = self.locals.get(target.id)
            if isinstance(local, Mem):
                self.store(local, value, node)
                return
            if local is None:
                constructed = self.construct(value)
                if constructed is not None:
                    self.locals[target.id] = constructed
                    return
                e = self.expr(value)
                if isinstance(e, Mem) and isinstance(e.type, (StructType, ArrayType)):
                    copy = self.new_struct(e.type, target.id, node)  # a copy, as in C
                    self.locals[target.id] = copy
                    self.copy_from(copy, e, node)
                    return
                v = self.rvalue(e, value)
                t = v.type
                self.declare(target, t, None, node, zero=False)
                self.set_local(self.locals[target.id], self.convert(v, t, node))
                return
            v = self.scalar(value)
            if isinstance(local.type, IntType):
                v = self.deref(v, value)
            self.set_local(local, self.convert_now(v, local.type, node))
            return
        if isinstance(target, ast.Subscript) and self.is_map(target.value):
            self.map_store(target, value, node)
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            place = self.expr(target)
            if not isinstance(place, Mem):
                raise self.err(target, "not a place that can be assigned")
            self.store(place, value, node)
            return
        raise self.err(target, f"cannot assign to {type(target).__name__}")

    def set_local(self, local: Local, v: Val) -> None:
        """``local = v``: the instruction that computed ``v`` writes the local itself
        when ``v`` is a fresh temporary."""
        last = self.fn.insns[-1] if self.fn.insns else None
        if v.reg is not None and last is not None and v.reg.id not in self.local_regs() \
                and getattr(last, "dst", None) is v.reg and not isinstance(last, ir.Param):
            last.dst = local.reg  # type: ignore[attr-defined]
            return
        self.emit(ir.Mov(local.reg, self.operand(v)))

    def local_regs(self) -> set[int]:
        return {x.reg.id for x in self.locals.values() if isinstance(x, Local)}

    def store(self, place: Mem, value: ast.expr, node: ast.AST) -> None:
        if place.kernel:
            raise self.err(node, "kernel memory is read-only here")
        if isinstance(place.type, (IntType, PtrType)):
            v = self.scalar(value)
            if isinstance(place.type, IntType):
                v = self.deref(v, value)
            v = self.convert_now(v, place.type, node)
            self.emit(ir.Store(place.base, place.off, self.operand(v), place.type.size))
            return
        self.copy_into(place, value, node)

    def augassign(self, node: ast.AugAssign) -> None:
        op = _AUG.get(type(node.op))
        if op is None:
            raise self.err(node, f"operator {type(node.op).__name__}= is not supported")
        target = node.target
        if isinstance(target, ast.Subscript) and self.is_map(target.value):
            self.map_update_op(target, op, node.value, node)
            return
        place = self.expr(target)
        if isinstance(place, Val) and isinstance(target, ast.Name):
            local = self.locals[target.id]
            if isinstance(local.type, PtrType):  # a map value: *v += x, atomically
                place = Mem(local.type.target, local.reg, atomic=True)
            else:
                result = self.arith(op, Val(local.type, local.reg), self.integer(node.value), node)
                self.set_local(local, self.convert(result, local.type))
                return
        if not isinstance(place, Mem) or not isinstance(place.type, IntType):
            raise self.err(node, "augmented assignment needs an integer place")
        if place.atomic and op in ("add", "sub") and place.type.size in (4, 8):
            v = self.convert(self.integer(node.value), place.type, node)
            if op == "sub":
                v = self.arith("sub", Val(place.type, const=0), v, node)
            assert isinstance(place.base, ir.VReg)
            self.emit(ir.AtomicAdd(place.base, place.off, self.reg_of(v), place.type.size))
            return
        old = self.load(place, node)
        result = self.convert(self.arith(op, old, self.integer(node.value), node), place.type)
        self.emit(ir.Store(place.base, place.off, self.operand(result), place.type.size))

    # -- control flow ------------------------------------------------------------
    def nested(self, body: list[ast.stmt]) -> None:
        self.depth += 1
        try:
            self.block(body)
        finally:
            self.depth -= 1

    def if_(self, node: ast.If) -> None:
        const = self.const_truth(node.test)
        if const is not None:
            self.nested(node.body if const else node.orelse)
            return
        other, end = self.new_label("else"), self.new_label("endif")
        self.cond_jump(node.test, other if node.orelse else end, False)
        self.nested(node.body)
        if node.orelse:
            if not self.fn.insns[-1].ends_block:
                self.emit(ir.Jmp(end))
            self.emit(ir.Label(other))
            self.nested(node.orelse)
        self.emit(ir.Label(end))

    def while_(self, node: ast.While) -> None:
        if node.orelse:
            raise self.err(node, "while ... else is not supported")
        head, end = self.new_label("while"), self.new_label("wend")
        self.emit(ir.Label(head))
        self.cond_jump(node.test, end, False)
        self.loops.append((head, end))
        self.nested(node.body)
        self.loops.pop()
        self.emit(ir.Jmp(head))
        self.emit(ir.Label(end))

    def for_(self, node: ast.For) -> None:
        """``for i in range(...)``: a hidden counter runs the loop, so assigning to ``i``
        in the body changes nothing (as in Python); ``i`` keeps its last value."""
        it = node.iter
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) \
                and self.global_object(it.func) is unroll:  # fmt: skip
            return self.unrolled(node, it)
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id == "range" and 1 <= len(it.args) <= 3):  # fmt: skip
            raise self.err(it, "for loops run over range(...) only")
        if node.orelse:
            raise self.err(node, "for ... else is not supported")
        if not isinstance(node.target, ast.Name):
            raise self.err(node.target, "the loop variable must be a name")
        args = [self.integer(a) for a in it.args]
        start = args[0] if len(args) > 1 else Val(s32, const=0)
        stop = args[1] if len(args) > 1 else args[0]
        step = 1
        if len(args) == 3:
            if args[2].const is None or args[2].const == 0:
                raise self.err(it.args[2], "the step of range() must be a non-zero constant")
            step = args[2].const
        t = stop.type
        for a in (start, stop):
            assert isinstance(a.type, IntType) and isinstance(t, IntType)
            t = self._common(t, a.type)
        assert isinstance(t, IntType)
        counter = self.new("range")
        self.emit(ir.Mov(counter, self.operand(self.convert(start, t))))
        stop = self.convert(stop, t)
        if stop.reg is not None:  # evaluated once, as Python's range()
            limit = self.new("stop")
            self.emit(ir.Mov(limit, stop.reg))
            stop = Val(t, limit)
        name = node.target.id
        if name not in self.locals:
            self.declare(node.target, t, None, node)
        var = self.locals[name]
        if not isinstance(var, Local) or not isinstance(var.type, IntType):
            raise self.err(node.target, f"{name} is not an integer variable")
        head, cont, end = self.new_label("for"), self.new_label("next"), self.new_label("fend")
        self.emit(ir.Label(head))
        cmp = ast.Lt() if step > 0 else ast.Gt()
        self.compare_values(cmp, Val(t, counter), stop, end, False, node)
        self.emit(ir.Mov(var.reg, self.operand(self.convert(Val(t, counter), var.type))))
        self.loops.append((cont, end))
        self.nested(node.body)
        self.loops.pop()
        self.emit(ir.Label(cont))
        step_v = self.arith("add", Val(t, counter), Val(t, const=step), node)
        self.emit(ir.Mov(counter, self.operand(step_v)))
        self.emit(ir.Jmp(head))
        self.emit(ir.Label(end))

    def unrolled(self, node: ast.For, it: ast.Call) -> None:
        """``for i in unroll(N)``: the body N times, ``i`` a constant in each (for array
        indexes the verifier wants constant, as in kernel structs)."""
        if len(it.args) != 1 or not isinstance(node.target, ast.Name):
            raise self.err(it, "for NAME in unroll(N), N a constant")
        n = self.const_int(it.args[0])
        if not 0 <= n <= 256:
            raise self.err(it, "unroll(N): N from 0 to 256")
        name = node.target.id
        if isinstance(self.locals.get(name), Local):
            raise self.err(node.target, f"{name} is a variable; unroll() needs a new name")
        end = self.new_label("uend")
        for k in range(n):
            nxt = self.new_label("unext")
            self.locals[name] = Val(s32, const=k)
            self.loops.append((nxt, end))
            self.nested(node.body)
            self.loops.pop()
            self.emit(ir.Label(nxt))
        self.locals.pop(name, None)
        self.emit(ir.Label(end))

    @staticmethod
    def _common(a: IntType, b: IntType) -> IntType:
        from .types import common

        return common(a, b)


def compile_function(unit: Any, pyfn: Callable[..., Any], name: str,
                     params: Optional[list[tuple[str, LangType]]] = None,
                     ) -> ir.Function:  # fmt: skip
    """A subprogram: parameters typed by their annotations (``def f(a: u32) -> u64``)."""
    node, source = parse_function(pyfn)
    fc = FunctionCompiler(unit, pyfn, node, source, name)
    if params is None:
        params = []
        for arg in node.args.args:
            if arg.annotation is None:
                raise fc.err(arg, f"parameter {arg.arg} needs a type annotation")
            params.append((arg.arg, fc.type_of_annotation(arg.annotation)))
        if len(params) > 5:
            raise fc.err(node, "a BPF function takes at most 5 arguments")
        for (pname, t), arg in zip(params, node.args.args):
            if not isinstance(t, (IntType, PtrType)):
                raise fc.err(arg, f"parameter {pname}: a {t} cannot be passed in a register")
    fc.compile_params(params)
    return fc.compile_body()


__all__ = ["FunctionCompiler", "compile_function", "parse_function", "StructType", "Expr"]
