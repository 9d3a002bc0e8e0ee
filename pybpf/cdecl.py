"""Local C type declarations: the part of ``vmlinux.h`` a program really uses.

libbpf's CO-RE compares the *local* types a program was compiled against
with the *target* kernel's BTF.  A pybpf program declares its local types
here, with only the members it touches (as libbpf-tools' ``___x``/``___o``
flavors do), and :func:`encode_local_btf` turns them into the program's local
BTF.  Local offsets are computed with natural alignment; they are only the
"before" values of relocations: the target's BTF decides the real ones.

Field references are built by attribute access and indexing, so a program
reads like C: ``task_struct.pid``, ``task_struct.comm[3]``.
"""

from __future__ import annotations

from typing import Optional, Union

from .btf_encoder import BTFBuilder


class CType:
    """Base of all local C types."""

    name: str = ""
    size: int = 0
    align: int = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Int(CType):
    def __init__(
        self, name: str, size: int, *, signed: bool = False, char: bool = False, bool_: bool = False
    ) -> None:
        if size not in (1, 2, 4, 8, 16):
            raise ValueError(f"int {name!r}: size {size} is not 1, 2, 4, 8 or 16")
        self.name, self.size, self.align = name, size, min(size, 8)
        self.signed, self.char, self.bool_ = signed, char, bool_


class Typedef(CType):
    def __init__(self, name: str, target: CType) -> None:
        self.name, self.target = name, target
        self.size, self.align = target.size, target.align


class Ptr(CType):
    """Pointer; ``target`` None is ``void *``."""

    def __init__(self, target: Optional[CType] = None) -> None:
        self.target = target
        self.name = ""
        self.size = self.align = 8


class Array(CType):
    def __init__(self, elem: CType, nelems: int) -> None:
        self.elem, self.nelems = elem, nelems
        self.name = ""
        self.size, self.align = elem.size * nelems, elem.align


class Enum(CType):
    def __init__(
        self, name: str, values: dict[str, int], size: int = 4, signed: bool = False
    ) -> None:
        self.name, self.values, self.signed = name, values, signed
        self.size = self.align = size


class Struct(CType):
    """A struct (or union) declared with the members a program needs.

    ``Struct("task_struct___x", [("__state", unsigned_int)])`` is libbpf-tools'
    ``struct task_struct___x { unsigned int __state; }``.
    """

    def __init__(self, name: str, members: list[tuple[str, CType]], *, union: bool = False):
        self.name, self.union = name, union
        self.members: list[tuple[str, CType, int]] = []
        offset = 0
        align = 1
        for member_name, ctype in members:
            if union:
                member_offset = 0
                offset = max(offset, ctype.size)
            else:
                member_offset = -(-offset // ctype.align) * ctype.align
                offset = member_offset + ctype.size
            align = max(align, ctype.align)
            self.members.append((member_name, ctype, member_offset))
        self.align = align
        self.size = -(-offset // align) * align

    def member(self, name: str) -> tuple[int, CType, int]:
        """(index, type, byte offset) of member ``name``."""
        for index, (member_name, ctype, offset) in enumerate(self.members):
            if member_name == name:
                return index, ctype, offset
        raise AttributeError(f"struct {self.name} declares no member {name!r}")

    def field(self, *path: Union[str, int]) -> FieldRef:
        return FieldRef(self, tuple(path))

    def __getattr__(self, name: str) -> FieldRef:
        if name == "members" or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        self.member(name)
        return FieldRef(self, (name,))


def Union_(name: str, members: list[tuple[str, CType]]) -> Struct:  # noqa: N802 - reads like C
    return Struct(name, members, union=True)


def strip_typedefs(ctype: CType) -> CType:
    while isinstance(ctype, Typedef):
        ctype = ctype.target
    return ctype


class FieldRef:
    """A member path inside a root struct, e.g. ``task_struct.comm[3]``.

    Knows its libbpf access string (``0:2:3``: the root pointer's index, then
    member or array indices), its local offset and its local type.
    """

    def __init__(self, root: Struct, path: tuple[Union[str, int], ...]) -> None:
        self.root, self.path = root, path
        indices = [0]
        offset = 0
        ctype: CType = root
        for step in path:
            ctype = strip_typedefs(ctype)
            if isinstance(step, str):
                if not isinstance(ctype, Struct):
                    raise TypeError(f"{self.dotted}: {step!r} is a member of a non-struct")
                index, ctype, member_offset = ctype.member(step)
                offset += member_offset
            else:
                if not isinstance(ctype, Array):
                    raise TypeError(f"{self.dotted}: index [{step}] of a non-array")
                if not 0 <= step < ctype.nelems:
                    raise IndexError(f"{self.dotted}: index {step} out of [0, {ctype.nelems})")
                index, offset = step, offset + step * ctype.elem.size
                ctype = ctype.elem
            indices.append(index)
        self.offset = offset
        self.ctype = ctype
        self.access = ":".join(str(i) for i in indices)

    @property
    def size(self) -> int:
        return self.ctype.size

    @property
    def dotted(self) -> str:
        """Member path for people: ``comm[3]``, ``se.vruntime``."""
        text = ""
        for step in self.path:
            text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
        return text

    def __getattr__(self, name: str) -> FieldRef:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return FieldRef(self.root, (*self.path, name))

    def __getitem__(self, index: int) -> FieldRef:
        return FieldRef(self.root, (*self.path, index))

    def __repr__(self) -> str:
        return f"<{self.root.name}.{self.dotted} @{self.offset} ({self.access})>"


def encode_local_btf(types: list[CType]) -> tuple[bytes, dict[int, int]]:
    """Encode ``types`` (and everything they reference) as BTF.

    Returns the BTF bytes and a map from ``id(ctype)`` to its BTF type id."""
    builder, ids = build_local_btf(types)
    return builder.encode(), ids


def build_local_btf(types: list[CType]) -> tuple[BTFBuilder, dict[int, int]]:
    """A BTF builder holding ``types``, to which more (FUNCs, strings) can be added.

    Returns the builder and a map from ``id(ctype)`` to its BTF type id.
    Ids are assigned depth-first before members are encoded, so
    self-referencing structs (through pointers) work.
    """
    order: list[CType] = []
    ids: dict[int, int] = {}

    def visit(ctype: Optional[CType]) -> None:
        if ctype is None or id(ctype) in ids:
            return
        ids[id(ctype)] = len(order) + 1
        order.append(ctype)
        if isinstance(ctype, (Typedef,)):
            visit(ctype.target)
        elif isinstance(ctype, Ptr):
            visit(ctype.target)
        elif isinstance(ctype, Array):
            visit(ctype.elem)
            visit(_ARRAY_INDEX)
        elif isinstance(ctype, Struct):
            for _, member_type, _ in ctype.members:
                visit(member_type)

    for ctype in types:
        visit(ctype)

    def tid(ctype: Optional[CType]) -> int:
        return 0 if ctype is None else ids[id(ctype)]

    builder = BTFBuilder()
    for ctype in order:
        if isinstance(ctype, Int):
            got = builder.add_int(
                ctype.name, ctype.size, signed=ctype.signed, char=ctype.char, bool_=ctype.bool_
            )
        elif isinstance(ctype, Typedef):
            got = builder.add_typedef(ctype.name, tid(ctype.target))
        elif isinstance(ctype, Ptr):
            got = builder.add_ptr(tid(ctype.target))
        elif isinstance(ctype, Array):
            got = builder.add_array(tid(ctype.elem), tid(_ARRAY_INDEX), ctype.nelems)
        elif isinstance(ctype, Enum):
            got = builder.add_enum(
                ctype.name, ctype.size, list(ctype.values.items()), signed=ctype.signed
            )
        elif isinstance(ctype, Struct):
            members = [(name, tid(mt), off * 8) for name, mt, off in ctype.members]
            add = builder.add_union if ctype.union else builder.add_struct
            got = add(ctype.name, ctype.size, members)
        else:  # pragma: no cover - every CType subclass is handled above
            raise TypeError(f"cannot encode {ctype!r}")
        if got != ids[id(ctype)]:  # pragma: no cover - ids are assigned in add order
            raise AssertionError("local BTF ids out of order")
    return builder, ids


# The index type of arrays, as clang emits it.
_ARRAY_INDEX = Int("__ARRAY_SIZE_TYPE__", 4)

# Common C types, named as in vmlinux.h.
char = Int("char", 1, signed=True)  # as clang and pahole encode it (the kernel takes one flag)
u8 = Int("unsigned char", 1)
u16 = Int("unsigned short", 2)
u32 = Int("unsigned int", 4)
u64 = Int("unsigned long long", 8)
s32 = Int("int", 4, signed=True)
s64 = Int("long long", 8, signed=True)
long = Int("long", 8, signed=True)
bool_ = Int("_Bool", 1, bool_=True)
pid_t = Typedef("pid_t", Typedef("__kernel_pid_t", s32))
