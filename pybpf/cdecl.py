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
from .errors import PyBPFError


class DeclError(PyBPFError, ValueError):
    """A local type declared wrongly (bad size, bad bitfield)."""


class NoMemberError(PyBPFError, AttributeError):
    """``task_struct.no_such_member``: the local declaration has no such member."""


class PathError(PyBPFError, TypeError):
    """A member path that does not fit the declaration (index of a non-array, ...)."""


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
            raise DeclError(f"int {name!r}: size {size} is not 1, 2, 4, 8 or 16")
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


class Float(CType):
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.align = name, size, size


class Const(CType):
    """``const T`` (a BTF modifier: skipped by CO-RE matching, like typedefs)."""

    def __init__(self, target: CType) -> None:
        self.target, self.name = target, ""
        self.size, self.align = target.size, target.align


class Volatile(Const):
    """``volatile T``."""


class Fwd(CType):
    """``struct name;`` (or ``union name;``): a forward declaration, for pointers."""

    def __init__(self, name: str, *, union: bool = False) -> None:
        self.name, self.union = name, union


class Enum(CType):
    """An enum; 8 bytes makes it an ENUM64 (BTF_KIND_ENUM64, Linux 6.0).

    ``my_enum.FOO`` is a reference to enumerator FOO, for ``enumval_exists``
    and ``enumval_value`` relocations."""

    def __init__(
        self, name: str, values: dict[str, int], size: int = 4, signed: bool = False
    ) -> None:
        if size not in (1, 2, 4, 8):
            raise DeclError(f"enum {name!r}: size {size} is not 1, 2, 4 or 8")
        self.name, self.values, self.signed = name, dict(values), signed
        self.size = self.align = size

    def enumerator(self, name: str) -> EnumValueRef:
        for index, vname in enumerate(self.values):
            if vname == name:
                return EnumValueRef(self, index, name, self.values[name])
        raise NoMemberError(f"enum {self.name} declares no enumerator {name!r}")

    def __getattr__(self, name: str) -> EnumValueRef:
        if name in ("values", "name") or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return self.enumerator(name)


class EnumValueRef:
    """One enumerator of a local enum: what ``bpf_core_enum_value(enum e, FOO)`` names."""

    def __init__(self, enum: Enum, index: int, name: str, value: int) -> None:
        self.root, self.index, self.name, self.value = enum, index, name, value
        self.access = str(index)

    def __repr__(self) -> str:
        return f"<{self.root.name}::{self.name} = {self.value}>"


class Struct(CType):
    """A struct (or union) declared with the members a program needs.

    ``Struct("task_struct___x", [("__state", unsigned_int)])`` is libbpf-tools'
    ``struct task_struct___x { unsigned int __state; }``.  A member is
    ``(name, type)`` or ``(name, type, bits)`` for a bitfield; a member named
    ``""`` of struct/union type is an anonymous member whose fields are reached
    by name through it (``s.x``), as in C11.  Layout follows the x86-64/arm64
    SysV ABI (bitfields never straddle a unit of their type).
    """

    def __init__(self, name: str, members: list[tuple], *, union: bool = False):
        self.name, self.union = name, union
        self.members: list[tuple[str, CType, int]] = []  # (name, type, byte offset)
        self.fields: list[tuple[str, CType, int, int]] = []  # (name, type, bit offset, bits)
        bit = 0  # next free bit (struct) / largest size in bits (union)
        align = 1
        for member in members:
            member_name, ctype = member[0], member[1]
            bits = member[2] if len(member) > 2 else 0
            unit = ctype.size * 8
            if bits:
                if not 0 < bits <= unit or not isinstance(strip_mods(ctype), (Int, Enum)):
                    raise DeclError(f"{name}.{member_name}: bad bitfield of {bits} bits")
                if union:
                    at = 0
                    bit = max(bit, bits)
                else:
                    at = bit if bit // unit == (bit + bits - 1) // unit else -(-bit // unit) * unit
                    bit = at + bits
            else:
                if union:
                    at = 0
                    bit = max(bit, unit)
                else:
                    at = -(-bit // (ctype.align * 8)) * ctype.align * 8
                    bit = at + unit
            align = max(align, ctype.align)
            self.members.append((member_name, ctype, at // 8))
            self.fields.append((member_name, ctype, at, bits))
        self.align = align
        nbytes = -(-bit // 8)
        self.size = -(-nbytes // align) * align

    def member(self, name: str) -> tuple[int, CType, int]:
        """(index, type, byte offset) of a direct member ``name``."""
        for index, (member_name, ctype, offset) in enumerate(self.members):
            if member_name == name:
                return index, ctype, offset
        raise NoMemberError(f"struct {self.name} declares no member {name!r}")

    def find(self, name: str) -> Optional[list[int]]:
        """Member indices leading to ``name``, through anonymous members (C11), or None."""
        for index, (member_name, _, _, _) in enumerate(self.fields):
            if member_name == name:
                return [index]
        for index, (member_name, ctype, _, _) in enumerate(self.fields):
            inner = strip_mods(ctype)
            if not member_name and isinstance(inner, Struct):
                path = inner.find(name)
                if path is not None:
                    return [index, *path]
        return None

    def field(self, *path: Union[str, int]) -> FieldRef:
        return FieldRef(self, tuple(path))

    def __getattr__(self, name: str) -> FieldRef:
        if name in ("members", "fields") or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return FieldRef(self, (name,))


def Union_(name: str, members: list[tuple[str, CType]]) -> Struct:  # noqa: N802 - reads like C
    return Struct(name, members, union=True)


def strip_typedefs(ctype: CType) -> CType:
    while isinstance(ctype, Typedef):
        ctype = ctype.target
    return ctype


def strip_mods(ctype: CType) -> CType:
    """Skip typedefs, const and volatile (what CO-RE skips)."""
    while isinstance(ctype, (Typedef, Const)):
        ctype = ctype.target
    return ctype


class FieldRef:
    """A member path inside a root struct, e.g. ``task_struct.comm[3]``.

    Knows its libbpf access string (``0:2:3``: the root pointer's index, then
    member or array indices, anonymous members included), its local offset,
    its local type and, for a bitfield, its width in bits.
    """

    def __init__(self, root: Struct, path: tuple[Union[str, int], ...]) -> None:
        self.root, self.path = root, path
        indices = [0]
        bit = 0
        bits = 0
        ctype: CType = root
        for step in path:
            ctype = strip_mods(ctype)
            if bits:
                raise PathError(f"{root.name}.{self.dotted}: a bitfield has no members")
            if isinstance(step, str):
                if not isinstance(ctype, Struct):
                    raise PathError(f"{root.name}.{self.dotted}: {step!r} of a non-struct")
                chain = ctype.find(step)
                if chain is None:
                    raise NoMemberError(f"struct {ctype.name} declares no member {step!r}")
                for depth, index in enumerate(chain):
                    assert isinstance(ctype, Struct)
                    _, member_type, member_bit, bits = ctype.fields[index]
                    bit += member_bit
                    indices.append(index)
                    last = depth == len(chain) - 1
                    ctype = member_type if last else strip_mods(member_type)
            else:
                if not isinstance(ctype, Array):
                    raise PathError(f"{root.name}.{self.dotted}: index [{step}] of a non-array")
                if not 0 <= step < ctype.nelems:
                    raise PathError(f"{self.dotted}: index {step} out of [0, {ctype.nelems})")
                bit += step * ctype.elem.size * 8
                indices.append(step)
                ctype = ctype.elem
        self.bit_offset = bit
        self.bitfield = bits
        self.offset = bit // 8
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


def core_field_value(kind: int, ref: FieldRef) -> int:
    """The *local* value of a field relocation of ``kind`` (libbpf's
    ``bpf_core_calc_field_relo`` on the local side): what the instruction must
    hold before relocation.  Kinds are ``enum bpf_core_relo_kind`` numbers."""
    if kind == 2:  # FIELD_EXISTS
        return 1
    ctype = strip_mods(ref.ctype)
    bit_off, bit_sz = ref.bit_offset, ref.bitfield
    if bit_sz:
        byte_sz = ctype.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8 and byte_sz < 8:
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz, byte_off, bit_sz = ctype.size, bit_off // 8, ctype.size * 8
    if kind == 0:  # FIELD_BYTE_OFFSET
        return byte_off
    if kind == 1:  # FIELD_BYTE_SIZE
        return byte_sz
    if kind == 3:  # FIELD_SIGNED
        return int(isinstance(ctype, (Int, Enum)) and ctype.signed)
    if kind == 4:  # FIELD_LSHIFT_U64 (u32 arithmetic, as libbpf)
        return (64 - (bit_off + bit_sz - byte_off * 8)) & 0xFFFFFFFF
    if kind == 5:  # FIELD_RSHIFT_U64
        return (64 - bit_sz) & 0xFFFFFFFF
    raise ValueError(f"not a field relocation kind: {kind}")


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
        if isinstance(ctype, (Typedef, Const)):
            visit(ctype.target)
        elif isinstance(ctype, Ptr):
            visit(ctype.target)
        elif isinstance(ctype, Array):
            visit(ctype.elem)
            visit(_ARRAY_INDEX)
        elif isinstance(ctype, Struct):
            for _, member_type, _, _ in ctype.fields:
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
        elif isinstance(ctype, Volatile):
            got = builder.add_volatile(tid(ctype.target))
        elif isinstance(ctype, Const):
            got = builder.add_const(tid(ctype.target))
        elif isinstance(ctype, Fwd):
            got = builder.add_fwd(ctype.name, union=ctype.union)
        elif isinstance(ctype, Float):
            got = builder.add_float(ctype.name, ctype.size)
        elif isinstance(ctype, Ptr):
            got = builder.add_ptr(tid(ctype.target))
        elif isinstance(ctype, Array):
            got = builder.add_array(tid(ctype.elem), tid(_ARRAY_INDEX), ctype.nelems)
        elif isinstance(ctype, Enum):
            got = builder.add_enum(
                ctype.name, ctype.size, list(ctype.values.items()), signed=ctype.signed
            )
        elif isinstance(ctype, Struct):
            members = [(name, tid(mt), bit, bits) for name, mt, bit, bits in ctype.fields]
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
