"""Kernel types by name, from the target's BTF, as ``vmlinux.h`` + ``preserve_access_index``.

A program says ``prev.pid``; the compiler looks ``pid`` up in the target's
``struct task_struct`` for its type, and records that the program uses it.  Once
every function is compiled, each kernel struct used becomes a *local* struct holding
only the members used (what libbpf-tools' ``___x`` flavors do by hand), and every
access a CO-RE relocation against it: the target's BTF then decides the real offsets.
A struct declared by the program (:class:`KernelStruct`, e.g. ``task_struct___o`` for
an old layout) is used as declared.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from .. import cdecl as _cd
from ..btf import (
    BTF,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VOLATILE,
)
from .errors import CompileError
from .types import ArrayType, LangType, PtrType, char, s8, s16, s32, s64, u8, u16, u32, u64

_MODS = (BTF_KIND_TYPEDEF, BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG)
_INTS = {(1, False): u8, (2, False): u16, (4, False): u32, (8, False): u64,
         (1, True): s8, (2, True): s16, (4, True): s32, (8, True): s64}  # fmt: skip


def essential(name: str) -> str:
    """``task_struct___o`` -> ``task_struct`` (libbpf's flavor rule)."""
    at = name.find("___")
    return name[:at] if at > 0 else name


class KStruct(LangType):
    """A kernel struct (or union) by name; ``declared``: the program's own declaration."""

    def __init__(self, name: str, declared: Optional[_cd.Struct] = None) -> None:
        self.name, self.declared = name, declared
        self.size = declared.size if declared is not None else 0
        self.ctype = declared if declared is not None else _cd.Struct(name, [])


class KField:
    """A member path from a kernel struct (``task_struct`` + ``("comm", 3)``); ``ref`` is
    the :class:`~pybpf.cdecl.FieldRef` once the local structs exist."""

    def __init__(self, root: KStruct, path: tuple[Union[str, int], ...]) -> None:
        self.root, self.path = root, path
        self.ref: Optional[_cd.FieldRef] = None

    def extend(self, step: Union[str, int]) -> KField:
        return KField(self.root, (*self.path, step))


class KernelStruct:
    """Base of structs a program declares for CO-RE, as C's
    ``struct task_struct___o { long state; } __attribute__((preserve_access_index))``."""

    _kstruct: KStruct

    def __init_subclass__(cls, **kw: Any) -> None:
        import sys

        from .types import resolve_type

        super().__init_subclass__(**kw)
        namespace = sys._getframe(1).f_globals
        members = []
        mangled = f"_{cls.__name__.lstrip('_')}__"
        for fname, ann in cls.__dict__.get("__annotations__", {}).items():
            if fname.startswith(mangled):  # __state in a class body reads _cls__state
                fname = fname[len(mangled) - 2 :]
            t = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307
            lt = resolve_type(t)
            if lt is None:
                raise CompileError(f"struct {cls.__name__}: field {fname} has no BPF type")
            members.append((fname, lt.ctype))
        cls._kstruct = KStruct(cls.__name__, _cd.Struct(cls.__name__, members))


class KernelTypes:
    """The target BTF's types, and the members the program touched."""

    def __init__(self, btf: Optional[BTF]) -> None:
        self.btf = btf
        self.structs: dict[str, KStruct] = {}
        self.used: dict[str, dict[str, Any]] = {}  # struct name -> member -> local ctype
        self._found: dict[str, Any] = {}

    def need_btf(self) -> BTF:
        if self.btf is None:
            raise CompileError("kernel types need the target kernel's BTF")
        return self.btf

    def struct(self, name: str) -> KStruct:
        if name not in self.structs:
            self._btf_struct(name)
            self.structs[name] = KStruct(name)
            self.used[name] = {}
        return self.structs[name]

    def declared(self, ks: KStruct) -> KStruct:
        self.structs.setdefault(ks.name, ks)
        return ks

    def _btf_struct(self, name: str) -> Any:
        """The target's struct (or union) of that essential name; looked up once."""
        found = self._found.get(name)
        if found is None:
            btf = self.need_btf()
            base = essential(name)
            ids = btf.find(base, BTF_KIND_STRUCT) or btf.find(base, BTF_KIND_UNION)
            if not ids:
                raise CompileError(f"the kernel's BTF has no struct {base}")
            found = self._found[name] = btf.type(ids[0])
        return found

    def skip(self, type_id: int) -> Any:
        btf = self.need_btf()
        t = btf.type(type_id)
        while t.kind in _MODS:
            t = btf.type(t.type)
        return t

    def lang_type(self, type_id: int, what: str) -> LangType:
        """The language type of a BTF type (ints, enums, pointers, arrays, structs)."""
        t = self.skip(type_id)
        if t.kind == BTF_KIND_INT:
            if t.name in ("char", "signed char") or (t.size == 1 and t.name == "char"):
                return char if t.name == "char" else s8
            return _INTS[(t.size if t.size in (1, 2, 4, 8) else 8, bool(t.int_encoding & 1))]
        if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return _INTS[(t.size, bool(t.kflag))]
        if t.kind == BTF_KIND_PTR:
            target = self.skip(t.type) if t.type else None
            if target is not None and target.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) \
                    and target.name:  # fmt: skip
                return PtrType(self.struct(target.name), kernel=True)
            return PtrType(None, kernel=True)
        if t.kind == BTF_KIND_ARRAY:
            return ArrayType(self.lang_type(t.elem_type, what), t.nelems)
        if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            if not t.name:
                raise CompileError(f"{what}: an anonymous struct or union member is not supported")
            return self.struct(t.name)
        raise CompileError(f"{what}: BTF kind {t.kind} is not supported")

    def member(self, ks: KStruct, name: str) -> LangType:
        """The type of ``ks.name``; records the member as used."""
        if ks.declared is not None:
            for mname, ctype, _ in ks.declared.members:
                if mname == name:
                    return self._from_ctype(ctype)
            raise CompileError(f"struct {ks.name} declares no member {name!r}")
        st = self._btf_struct(ks.name)
        for m in st.members:
            if m.name == name:
                if m.bitfield_size:
                    raise CompileError(f"{ks.name}.{name} is a bitfield: not supported yet")
                t = self.lang_type(m.type, f"{ks.name}.{name}")
                self.used[ks.name].setdefault(name, m.type)
                return t
        raise CompileError(f"struct {ks.name} has no member {name!r} in the kernel's BTF")

    def _from_ctype(self, ctype: _cd.CType) -> LangType:
        c = _cd.strip_mods(ctype)
        if isinstance(c, _cd.Int):
            if c is char.ctype:
                return char
            return _INTS[(c.size, c.signed)]
        if isinstance(c, _cd.Array):
            return ArrayType(self._from_ctype(c.elem), c.nelems)
        if isinstance(c, _cd.Ptr):
            return PtrType(None, kernel=True)
        raise CompileError(f"{ctype!r} members are not supported")

    def tracepoint_args(self, tp: str) -> list[tuple[str, LangType]]:
        """``btf_trace_<tp>``'s parameters after the first (``void *__data``): the
        arguments of a tp_btf program (Linux 5.5)."""
        btf = self.need_btf()
        ids = btf.find("btf_trace_" + tp, BTF_KIND_TYPEDEF)
        if not ids:
            raise CompileError(f"tracepoint {tp!r}: no btf_trace_{tp} in the kernel's BTF")
        ptr = btf.type(btf.type(ids[0]).type)
        proto = btf.type(ptr.type)
        if proto.kind != BTF_KIND_FUNC_PROTO:
            raise CompileError(f"btf_trace_{tp} is not a function pointer")
        return [(p.name, self.lang_type(p.type, f"{tp} argument {p.name}"))
                for p in proto.params[1:]]  # fmt: skip

    # -- after compiling: the local structs ----------------------------------------
    def finalize(self, fields: list[KField]) -> None:
        built: dict[str, _cd.CType] = {}

        def local(name: str) -> _cd.CType:
            ks = self.structs[name]
            if ks.declared is not None:
                return ks.declared
            if name in built:
                return built[name]
            members = [(m, self._local_ctype(tid, local)) for m, tid in self.used[name].items()]
            st = _cd.Struct(name, members, union=self._btf_struct(name).kind == BTF_KIND_UNION)
            built[name] = st
            return st

        for f in fields:
            root = local(f.root.name)
            assert isinstance(root, _cd.Struct)
            f.ref = _cd.FieldRef(root, f.path)

    def _local_ctype(self, type_id: int, local: Any) -> _cd.CType:
        t = self.skip(type_id)
        if t.kind == BTF_KIND_INT:
            enc = t.int_encoding
            return _cd.Int(t.name, t.size, signed=bool(enc & 1), char=bool(enc & 2),
                           bool_=bool(enc & 4))
        if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return _cd.Enum(t.name, {}, t.size, signed=bool(t.kflag))
        if t.kind == BTF_KIND_PTR:
            return _cd.Ptr(None)
        if t.kind == BTF_KIND_ARRAY:
            return _cd.Array(self._local_ctype(t.elem_type, local), t.nelems)
        return local(t.name)
