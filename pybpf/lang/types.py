"""The language's types: C integers, arrays, structs declared once for both sides, pointers.

Every integer value lives in a 64-bit register *normalized* to its type: zero-extended
for unsigned types, sign-extended for signed ones.  Then 64-bit compares and 64-bit
divisions give C's answers for every width, and a conversion is at most one instruction.
Arithmetic follows C: operands narrower than ``int`` are promoted to ``int`` (s32), then
converted to a common type by the usual arithmetic conversions (C11 6.3.1.8).
"""

from __future__ import annotations

import struct as _struct
import sys
from typing import Any, Optional

from .. import cdecl as _cd
from .errors import CompileError


class LangType:
    """Base of the language's types; ``ctype`` is the C type that BTF describes."""

    name = ""
    size = 0
    ctype: _cd.CType

    def __getitem__(self, n: int) -> ArrayType:
        """``u8[16]``, ``char[16]``: an array type."""
        return ArrayType(self, n)

    def __repr__(self) -> str:
        return self.name


class IntType(LangType):
    def __init__(self, name: str, size: int, signed: bool, ctype: _cd.CType) -> None:
        self.name, self.size, self.signed, self.ctype = name, size, signed, ctype
        self.bits = size * 8

    def wrap(self, value: int) -> int:
        """``value`` converted to this type (C's modulo-2^N conversion)."""
        value &= (1 << self.bits) - 1
        if self.signed and value >> (self.bits - 1):
            value -= 1 << self.bits
        return value

    def rep64(self, value: int) -> int:
        """The normalized 64-bit register image of ``value`` as a signed 64-bit number."""
        value = self.wrap(value) & ((1 << 64) - 1)
        return value - (1 << 64) if value >> 63 else value

    @property
    def codec(self) -> _struct.Struct:
        """For user space: packs and unpacks one value (``Map.typed``)."""
        return _struct.Struct("<" + _FORMATS[(self.size, self.signed)])

    def __call__(self, *args: Any) -> Any:
        raise CompileError(f"{self.name}(...) is a conversion inside BPF functions only")


u8 = IntType("u8", 1, False, _cd.u8)
u16 = IntType("u16", 2, False, _cd.u16)
u32 = IntType("u32", 4, False, _cd.u32)
u64 = IntType("u64", 8, False, _cd.u64)
s8 = IntType("s8", 1, True, _cd.Int("signed char", 1, signed=True))
s16 = IntType("s16", 2, True, _cd.Int("short", 2, signed=True))
s32 = IntType("s32", 4, True, _cd.s32)
s64 = IntType("s64", 8, True, _cd.s64)
char = IntType("char", 1, True, _cd.char)  # for strings: char[16] decodes to str
INT_TYPES = {t.name: t for t in (u8, u16, u32, u64, s8, s16, s32, s64, char)}


def promote(t: IntType) -> IntType:
    """C's integer promotion: everything narrower than int becomes int."""
    return s32 if t.size < 4 else t


def common(a: IntType, b: IntType) -> IntType:
    """C's usual arithmetic conversions for two integer operands."""
    a, b = promote(a), promote(b)
    if a is b:
        return a
    if a.signed == b.signed:
        return a if a.size >= b.size else b
    unsigned, signed = (a, b) if not a.signed else (b, a)
    if unsigned.size >= signed.size:
        return unsigned
    return signed  # s64 holds every u32


def literal_type(value: int) -> IntType:
    """The type of a decimal literal: int, then long, then unsigned long (as GCC and clang)."""
    if -(1 << 31) <= value < 1 << 31:
        return s32
    if -(1 << 63) <= value < 1 << 63:
        return s64
    if 0 <= value < 1 << 64:
        return u64
    raise CompileError(f"integer literal {value} does not fit in 64 bits")


class ArrayType(LangType):
    def __init__(self, elem: LangType, n: int) -> None:
        if not isinstance(n, int) or n <= 0:
            raise CompileError(f"array length must be a positive integer, not {n!r}")
        self.elem, self.n = elem, n
        self.size = elem.size * n
        self.name = f"{elem.name}[{n}]"
        self.ctype = _cd.Array(elem.ctype, n)


class StructMeta(type):
    """Makes ``class Event(Struct): pid: u32`` a struct type usable in BPF and in Python."""

    def __getitem__(cls, n: int) -> ArrayType:
        return ArrayType(struct_type(cls), n)


class Struct(metaclass=StructMeta):
    """Base of structs declared once for both sides: BPF code fills one on its stack
    (zeroed, as ``struct event e = {};``), user space gets an object with its fields
    back from the bytes (:meth:`decode`).  Fields are class annotations, in order."""

    _lang: StructType

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        namespace = sys._getframe(1).f_globals
        cls._lang = StructType(cls, namespace)

    def __init__(self, **fields: Any) -> None:
        for name, _ in self._lang.fields:
            setattr(self, name, fields.pop(name, 0))
        if fields:
            raise TypeError(f"{type(self).__name__} has no fields {sorted(fields)}")

    @classmethod
    def decode(cls, data: bytes) -> Any:
        """The object an event's bytes describe (``char[N]`` fields as str)."""
        return cls._lang.decode(data)

    @classmethod
    def encode(cls, obj: Any) -> bytes:
        return cls._lang.encode(obj)

    @classmethod
    def size(cls) -> int:
        return cls._lang.size

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self._lang.fields)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n, _ in self._lang.fields
        )


_FORMATS = {(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
            (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q"}  # fmt: skip


class StructType(LangType):
    def __init__(self, cls: type, namespace: dict[str, Any]) -> None:
        self.cls, self.name = cls, cls.__name__
        self.fields: list[tuple[str, LangType]] = []
        for fname, ann in cls.__dict__.get("__annotations__", {}).items():
            t = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307 - a type name
            t = resolve_type(t)
            if t is None:
                raise CompileError(f"struct {self.name}: field {fname} has no BPF type ({ann!r})")
            self.fields.append((fname, t))
        self.ctype = _cd.Struct(self.name, [(n, t.ctype) for n, t in self.fields])
        self.size = self.ctype.size
        self.offsets = {n: off for (n, _, off) in self.ctype.members}
        fmt, parts, at = "<", [], 0
        for (n, t), (_, _, off) in zip(self.fields, self.ctype.members):
            if off > at:
                fmt += f"{off - at}x"
            if isinstance(t, IntType):
                fmt += _FORMATS[(t.size, t.signed)]
            else:
                fmt += f"{t.size}s"
            parts.append((n, t))
            at = off + t.size
        fmt += f"{self.size - at}x" if self.size > at else ""
        self.layout = _struct.Struct(fmt)

    def field(self, name: str) -> Optional[tuple[int, LangType]]:
        for n, t in self.fields:
            if n == name:
                return self.offsets[n], t
        return None

    def decode(self, data: bytes) -> Any:
        obj = self.cls.__new__(self.cls)
        for (n, t), raw in zip(self.fields, self.layout.unpack_from(data)):
            if isinstance(t, ArrayType) and t.elem is char:
                raw = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            setattr(obj, n, raw)
        return obj

    @property
    def codec(self) -> StructType:
        return self

    def pack(self, obj: Any) -> bytes:
        return self.encode(obj)

    def unpack(self, data: bytes) -> Any:
        return self.decode(data)

    def encode(self, obj: Any) -> bytes:
        values = []
        for n, t in self.fields:
            v = getattr(obj, n)
            if isinstance(t, ArrayType) and isinstance(v, str):
                v = v.encode()
            values.append(v if isinstance(t, IntType) else bytes(v))
        return self.layout.pack(*values)


def struct_type(cls: type) -> StructType:
    return cls._lang  # type: ignore[attr-defined]


def resolve_type(obj: Any) -> Optional[LangType]:
    """The language type a Python object names (``u32``, ``Event``, ``char[16]``), or None."""
    if isinstance(obj, LangType):
        return obj
    if isinstance(obj, type) and issubclass(obj, Struct) and obj is not Struct:
        return obj._lang
    if obj is int:
        return s64
    if obj is bool:
        return s32
    return None


class PtrType(LangType):
    """A pointer to memory the program may read: a map value, or a kernel struct (BTF)."""

    def __init__(self, target: Any, kernel: bool = False, nullable: bool = False) -> None:
        self.target, self.kernel, self.nullable = target, kernel, nullable
        self.size = 8
        self.name = f"{getattr(target, 'name', target)} *"
        self.ctype = _cd.Ptr(None)
