"""Programs, subprograms, and the object they make together.

::

    @program("tp_btf/sched_switch")
    def on_switch(preempt, prev, next):      # names and types from btf_trace_sched_switch
        counts[0] += 1

    obj = build("switches", [on_switch], btf)   # an ObjectSpec, as the Asm-written tools make

Every function a program calls (``@function``) becomes a bpf-to-bpf subprogram
appended to the calling program.  Helpers, kernel types and tracepoint arguments come
from the target's BTF, so compilation needs it; nothing here touches the kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..asm import Asm
from ..btf import BTF, BTF_KIND_ENUM
from ..object import Globals, ObjectSpec, ProgramSpec
from . import ir
from .codegen import generate
from .errors import CompileError
from .front import FunctionCompiler, compile_function, parse_function
from .kernel import KernelTypes, KField
from .mapdefs import MapDecl, ReadOnly
from .types import IntType, LangType, PtrType, s32, u64
from .values import Local, Val


def program(section: str, *, license: str = "GPL") -> Callable[[Callable[..., Any]], Any]:
    """Mark a function as a BPF program of ``section`` (``"tp_btf/sched_switch"``,
    ``"socket"``, ...).  The function is compiled from its source, never called."""

    def mark(pyfn: Callable[..., Any]) -> Callable[..., Any]:
        pyfn._bpf_program = (section, license)  # type: ignore[attr-defined]
        return pyfn

    return mark


def function(pyfn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function as a BPF subprogram (typed parameters, at most 5; a typed result)."""
    pyfn._bpf_function = True  # type: ignore[attr-defined]
    return pyfn


_LOG_INSN = re.compile(r"^(\d+): \(")


@dataclass
class Compiled:
    """What :func:`build` returns: the object, and where each instruction came from."""

    spec: ObjectSpec
    lines: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # (file, line)/insn
    maps: dict[str, MapDecl] = field(default_factory=dict)
    readonly: Optional[type] = None

    def source_line(self, program: str, slot: int) -> Optional[str]:
        """``file:line`` of the Python source that instruction slot ``slot`` came from."""
        prog = next((p for p in self.spec.programs if p.name == program), None)
        if prog is None:
            return None
        at = 0
        for index, insn in enumerate(prog.insns):
            if at >= slot:
                lines = self.lines[program]
                if index >= len(lines):
                    return None
                file, line = lines[index]
                return f"{file}:{line}"
            at += insn.slots
        return None

    def explain(self, program: str, log: str) -> Optional[str]:
        """The Python line of the instruction a verifier log ends on (the one refused)."""
        last = None
        for line in log.splitlines():
            m = _LOG_INSN.match(line)
            if m:
                last = int(m.group(1))
        return None if last is None else self.source_line(program, last)

    def typed_maps(self, obj: Any) -> dict[str, Any]:
        """The loaded object's maps, keys and values converted by their declared types
        (numbers, and :class:`~pybpf.lang.Struct` objects)."""
        out = {}
        for name, decl in self.maps.items():
            live = obj.maps[name]
            if decl.key is not None and decl.value is not None:
                live = live.typed(decl.key.codec, decl.value.codec)
            out[name] = live
        return out


class Unit:
    """One compilation: the maps, globals, kernel types and subprograms programs share."""

    def __init__(self, btf: Optional[BTF]) -> None:
        self.btf = btf
        self.kernel = KernelTypes(btf)
        self.maps: dict[str, MapDecl] = {}
        self.readonly: Optional[type] = None
        self.layout: Optional[Globals] = None
        self.subs: dict[str, tuple[Any, list[tuple[str, LangType]], LangType]] = {}
        self.sub_ir: dict[str, ir.Function] = {}
        self.fields: list[KField] = []
        self._helpers: Optional[set[str]] = None

    def use_map(self, m: MapDecl) -> None:
        other = self.maps.setdefault(m.name, m)
        if other is not m:
            raise CompileError(f"two different maps are named {m.name!r}")

    def use_rodata(self, cls: type) -> Globals:
        if self.readonly is None:
            assert issubclass(cls, ReadOnly)
            self.readonly, self.layout = cls, cls.globals()
        elif self.readonly is not cls:
            raise CompileError("one ReadOnly class per object")
        assert self.layout is not None
        return self.layout

    def has_helper(self, name: str) -> bool:
        if self.btf is None:
            return True  # checked when the object is prepared for a kernel
        if self._helpers is None:
            ids = self.btf.find("bpf_func_id", BTF_KIND_ENUM)
            values = self.btf.type(ids[0]).values if ids else ()
            self._helpers = {v.name[len("BPF_FUNC_"):] for v in values}
        return name in self._helpers

    def field(self, kf: KField) -> KField:
        self.fields.append(kf)
        return kf

    def subprogram(self, pyfn: Any) -> tuple[str, list[tuple[str, LangType]], LangType]:
        """Name, parameter types and result type of a ``@function`` (compiled later)."""
        name = pyfn.__name__
        known = self.subs.get(name)
        if known is not None:
            if known[0] is not pyfn:
                raise CompileError(f"two BPF functions are named {name!r}")
            return name, known[1], known[2]
        node, source = parse_function(pyfn)
        fc = FunctionCompiler(self, pyfn, node, source, name)
        params = []
        for arg in node.args.args:
            if arg.annotation is None:
                raise fc.err(arg, f"parameter {arg.arg} needs a type annotation")
            params.append((arg.arg, fc.type_of_annotation(arg.annotation)))
        ret = fc.type_of_annotation(node.returns) if node.returns is not None else s32
        self.subs[name] = (pyfn, params, ret)
        return name, params, ret

    def compile_pending(self) -> None:
        while True:
            todo = [n for n in self.subs if n not in self.sub_ir]
            if not todo:
                return
            for name in todo:
                pyfn, params, _ = self.subs[name]
                self.sub_ir[name] = compile_function(self, pyfn, name, params)


def compile_program(unit: Unit, pyfn: Callable[..., Any], section: str) -> ir.Function:
    """A program's IR: r1 is its context; a tp_btf program's parameters are the
    tracepoint's arguments (``ctx[i]``), typed from ``btf_trace_<name>``."""
    node, source = parse_function(pyfn)
    fc = FunctionCompiler(unit, pyfn, node, source, pyfn.__name__)
    kind, _, point = section.partition("/")
    ctx = fc.new("ctx")
    fc.emit(ir.Param(ctx, 0))
    fc.ctx = ctx
    names = [a.arg for a in node.args.args]
    if kind in ("tp_btf", "raw_tp", "raw_tracepoint", "fentry", "fexit"):
        if kind in ("fentry", "fexit"):
            raise fc.err(node, f"{kind} programs are not supported yet")
        # raw_tp (4.17): the same u64 arguments, but untyped for the verifier
        fc.direct = kind == "tp_btf"
        args = unit.kernel.tracepoint_args(point)
        if len(names) > len(args):
            raise fc.err(node, f"tracepoint {point} has {len(args)} arguments: "
                         + ", ".join(n for n, _ in args))  # fmt: skip
        for i, (pname, (_, t)) in enumerate(zip(names, args)):
            r = fc.new(pname)
            fc.emit(ir.Load(r, ctx, 8 * i, 8))
            if isinstance(t, IntType):  # each argument is a u64 slot
                r = fc.reg_of(fc.convert(Val(u64, r), t))
            fc.locals[pname] = Local(t, r)
    else:
        if len(names) > 1:
            raise fc.err(node, f"a {kind} program takes one argument, its context")
        if names:
            fc.locals[names[0]] = Local(PtrType(None, kernel=True), ctx)
    return fc.compile_body()


def emit_with_calls(unit: Unit, fn: ir.Function, a: Asm) -> list[tuple[str, int]]:
    """``fn`` then every subprogram it calls (once each, only those still called after
    dead code went: the kernel refuses unreachable subprograms)."""
    lines = [(fn.source.filename, n) for n in generate(fn, a)]
    emitted = {fn.name}
    pending = sorted(fn.calls)
    while pending:
        sub = pending.pop(0)
        if sub in emitted:
            continue
        emitted.add(sub)
        sub_fn = unit.sub_ir[sub]
        lines += [(sub_fn.source.filename, n) for n in generate(sub_fn, a)]
        pending += sorted(unit.sub_ir[sub].calls)
    return lines


def _source_lines(lines: list[tuple[str, int]]) -> list[tuple[str, int, str]]:
    """(file, line, text) per instruction, for the program BTF's line_info."""
    import linecache

    return [(file, line, linecache.getline(file, line).strip() if not file.startswith("<")
             else "") for file, line in lines]  # fmt: skip


def build(name: str, programs: list[Callable[..., Any]], btf: Optional[BTF] = None) -> Compiled:
    """Compile ``programs`` (``@program`` functions) and everything they use into an
    :class:`~pybpf.object.ObjectSpec` (in ``.spec``)."""
    unit = Unit(btf)
    irs: list[tuple[ir.Function, str, str]] = []
    for pyfn in programs:
        mark = getattr(pyfn, "_bpf_program", None)
        if mark is None:
            raise CompileError(f"{getattr(pyfn, '__name__', pyfn)!r} is not a @program")
        irs.append((compile_program(unit, pyfn, mark[0]), mark[0], mark[1]))
    unit.compile_pending()
    unit.kernel.finalize(unit.fields)
    out = Compiled(ObjectSpec(name, []), maps=dict(unit.maps), readonly=unit.readonly)
    for fn, section, lic in irs:
        a = Asm()
        lines = emit_with_calls(unit, fn, a)
        insns = a.assemble()
        out.spec.programs.append(ProgramSpec(fn.name, section, insns, lic,
                                             source=_source_lines(lines)))  # fmt: skip
        out.lines[fn.name] = lines
    out.spec.maps = [m.spec() for m in unit.maps.values()]
    out.spec.rodata = unit.layout
    return out


class SourceFunction:
    """A BPF function given as source text (generated code, tests): what the compiler
    reads of a Python function, without defining one."""

    def __init__(self, text: str, namespace: dict[str, Any], filename: str = "<text>",
                 first_line: int = 1) -> None:  # fmt: skip
        import ast as _ast

        node = _ast.parse(text).body[0]
        self.__name__ = getattr(node, "name", "f")
        self.__globals__ = namespace
        self._bpf_source = (filename, first_line, text)
        self._bpf_function = True


def compile_subprogram(pyfn: Callable[..., Any], a: Asm, btf: Optional[BTF] = None) -> str:
    """Emit one ``@function`` (and what it calls) into ``a``; returns its label.  For
    programs written in ``Asm`` that call a function written in the language."""
    unit = Unit(btf)
    name, _, _ = unit.subprogram(pyfn)
    unit.compile_pending()
    unit.kernel.finalize(unit.fields)
    emit_with_calls(unit, unit.sub_ir[name], a)
    if unit.maps or unit.layout is not None:
        raise CompileError(f"{name}: a function emitted alone may not use maps or globals")
    return name


__all__ = ["program", "function", "build", "Compiled", "compile_subprogram", "SourceFunction"]
