"""BTF (BPF Type Format) parser: pure Python, no syscalls, standard library only.

Loading kernel BTF must be fast (the CLI reaches its first output line in < 90 ms and vmlinux
BTF has ~127k types), so parsing is lazy:

* the type section is viewed as an array of u32 words (every BTF record is a multiple of 4
  bytes), and one tight loop records the word offset of each type id (~10 ms for vmlinux);
* a :class:`Type` is decoded only when asked for, then cached;
* name look-ups search the string section with ``bytes.find`` (C speed) for the candidate name
  offsets, then search the packed name-offset column of the types for those offsets.

Both byte orders are read (a big-endian blob is byte-swapped once). Split BTF (module BTF on
top of vmlinux) is supported through the ``base`` argument.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from typing import Iterator, Union

from pybpf.errors import BTFError
from pybpf.ints import s32 as _s32

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
BTF_HEADER_LEN = 24  # struct btf_header of UAPI v1: magic, version, flags, hdr_len, 4 x u32

BTF_KIND_UNKN = 0
BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_FWD = 7
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FLOAT = 16
BTF_KIND_DECL_TAG = 17
BTF_KIND_TYPE_TAG = 18
BTF_KIND_ENUM64 = 19
NR_BTF_KINDS = 20

# BTF_KIND_INT encoding bits.
BTF_INT_SIGNED = 1
BTF_INT_CHAR = 2
BTF_INT_BOOL = 4

# Linkage of BTF_KIND_FUNC (kept in vlen) and BTF_KIND_VAR.
BTF_FUNC_STATIC = 0
BTF_FUNC_GLOBAL = 1
BTF_FUNC_EXTERN = 2
BTF_VAR_STATIC = 0
BTF_VAR_GLOBAL_ALLOCATED = 1
BTF_VAR_GLOBAL_EXTERN = 2

KIND_NAMES: dict[int, str] = {
    BTF_KIND_UNKN: "UNKNOWN",
    BTF_KIND_INT: "INT",
    BTF_KIND_PTR: "PTR",
    BTF_KIND_ARRAY: "ARRAY",
    BTF_KIND_STRUCT: "STRUCT",
    BTF_KIND_UNION: "UNION",
    BTF_KIND_ENUM: "ENUM",
    BTF_KIND_FWD: "FWD",
    BTF_KIND_TYPEDEF: "TYPEDEF",
    BTF_KIND_VOLATILE: "VOLATILE",
    BTF_KIND_CONST: "CONST",
    BTF_KIND_RESTRICT: "RESTRICT",
    BTF_KIND_FUNC: "FUNC",
    BTF_KIND_FUNC_PROTO: "FUNC_PROTO",
    BTF_KIND_VAR: "VAR",
    BTF_KIND_DATASEC: "DATASEC",
    BTF_KIND_FLOAT: "FLOAT",
    BTF_KIND_DECL_TAG: "DECL_TAG",
    BTF_KIND_TYPE_TAG: "TYPE_TAG",
    BTF_KIND_ENUM64: "ENUM64",
}

# Per kind: u32 words following the 3-word common header, and words per vlen entry.
# FUNC uses vlen for its linkage, so its entry size is 0.
_EXTRA_WORDS = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_ENTRY_WORDS = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)

_MODS_AND_TYPEDEF = frozenset(
    (BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG)
)
_MAX_RESOLVE_DEPTH = 32  # libbpf's MAX_RESOLVE_DEPTH
_U32_MAX = 0xFFFFFFFF
_INFO_UNUSED_BITS = 0x60FF0000  # must be zero in btf_type.info

_XZ_MAGIC = b"\xfd7zXZ\x00"
_ELF_MAGIC = b"\x7fELF"

# array/memoryview type code of a 4-byte unsigned integer on this host.
_U32 = "I" if array("I").itemsize == 4 else "L"
_HOST_ORDER = "<" if sys.byteorder == "little" else ">"

PathLike = Union[str, "os.PathLike[str]"]


class _Record:
    """Immutable value object with ``@dataclass(frozen=True)`` semantics (keyword or positional
    construction, field-wise ==/hash, repr, no assignment).

    Hand-written rather than a dataclass because importing ``dataclasses`` (it pulls in
    ``inspect``) and generating these classes costs ~10 ms at start-up, 10% of the CLI's budget.
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _astuple(self) -> tuple:
        return tuple([getattr(self, f) for f in self._fields])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._astuple() == other._astuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{self.__class__.__name__}({args})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __reduce__(self) -> tuple:
        return (self.__class__, self._astuple())

    def _replace(self, **changes: object) -> _Record:
        """A copy with some fields changed (like ``dataclasses.replace``)."""
        kw = {f: getattr(self, f) for f in self._fields}
        kw.update(changes)
        return self.__class__(**kw)


_set = object.__setattr__


class Member(_Record):
    """A STRUCT/UNION member; ``bit_offset``/``bitfield_size`` already split per kflag."""

    __slots__ = _fields = ("name", "type", "bit_offset", "bitfield_size")
    name: str
    type: int
    bit_offset: int
    bitfield_size: int

    def __init__(self, name: str, type: int, bit_offset: int, bitfield_size: int) -> None:
        _set(self, "name", name)
        _set(self, "type", type)
        _set(self, "bit_offset", bit_offset)
        _set(self, "bitfield_size", bitfield_size)


class EnumValue(_Record):
    """An ENUM/ENUM64 enumerator; ``value`` is signed when the type's kflag says so."""

    __slots__ = _fields = ("name", "value")
    name: str
    value: int

    def __init__(self, name: str, value: int) -> None:
        _set(self, "name", name)
        _set(self, "value", value)


class Param(_Record):
    """A FUNC_PROTO parameter (name "" and type 0 for a trailing ``...``)."""

    __slots__ = _fields = ("name", "type")
    name: str
    type: int

    def __init__(self, name: str, type: int) -> None:
        _set(self, "name", name)
        _set(self, "type", type)


class VarSecinfo(_Record):
    """A DATASEC entry: the VAR (or FUNC) id and where it lives in the section."""

    __slots__ = _fields = ("type", "offset", "size")
    type: int
    offset: int
    size: int

    def __init__(self, type: int, offset: int, size: int) -> None:
        _set(self, "type", type)
        _set(self, "offset", offset)
        _set(self, "size", size)


class Type(_Record):
    """One decoded BTF type; only the fields meaningful for ``kind`` are non-default.

    ``size``: INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT. ``type``: the target of
    PTR/TYPEDEF/VOLATILE/CONST/RESTRICT/TYPE_TAG/FUNC/VAR/DECL_TAG, FUNC_PROTO's return type.
    ``linkage``: FUNC (its vlen) and VAR.
    """

    __slots__ = _fields = (
        "id", "kind", "name", "vlen", "kflag", "size", "type", "int_encoding", "int_offset",
        "int_bits", "elem_type", "index_type", "nelems", "members", "values", "params",
        "linkage", "secinfos", "component_idx",
    )
    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    size: int
    type: int
    int_encoding: int
    int_offset: int
    int_bits: int
    elem_type: int
    index_type: int
    nelems: int
    members: tuple[Member, ...]
    values: tuple[EnumValue, ...]
    params: tuple[Param, ...]
    linkage: int
    secinfos: tuple[VarSecinfo, ...]
    component_idx: int

    def __init__(
        self, id: int, kind: int, name: str, vlen: int, kflag: bool, size: int = 0,
        type: int = 0, int_encoding: int = 0, int_offset: int = 0, int_bits: int = 0,
        elem_type: int = 0, index_type: int = 0, nelems: int = 0,
        members: tuple[Member, ...] = (), values: tuple[EnumValue, ...] = (),
        params: tuple[Param, ...] = (), linkage: int = 0, secinfos: tuple[VarSecinfo, ...] = (),
        component_idx: int = 0,
    ) -> None:
        _set(self, "id", id)
        _set(self, "kind", kind)
        _set(self, "name", name)
        _set(self, "vlen", vlen)
        _set(self, "kflag", kflag)
        _set(self, "size", size)
        _set(self, "type", type)
        _set(self, "int_encoding", int_encoding)
        _set(self, "int_offset", int_offset)
        _set(self, "int_bits", int_bits)
        _set(self, "elem_type", elem_type)
        _set(self, "index_type", index_type)
        _set(self, "nelems", nelems)
        _set(self, "members", members)
        _set(self, "values", values)
        _set(self, "params", params)
        _set(self, "linkage", linkage)
        _set(self, "secinfos", secinfos)
        _set(self, "component_idx", component_idx)

    @property
    def kind_name(self) -> str:
        """The kind as bpftool prints it ("STRUCT", "FUNC_PROTO", ...)."""
        return KIND_NAMES.get(self.kind, f"UNKNOWN_KIND_{self.kind}")


VOID = Type(id=0, kind=BTF_KIND_UNKN, name="", vlen=0, kflag=False)


class _BadInfo(Exception):
    """Internal: an info word the index loop cannot size (converted to BTFError with the id)."""


class _SkipTable(dict):
    """info word -> record length in words, filled on first sight of each info value.

    Keying on the whole info word makes the index loop one dict look-up per type; vmlinux has
    only a few thousand distinct info values.
    """

    def __missing__(self, info: int) -> int:
        kind = (info >> 24) & 0x1F
        if info & _INFO_UNUSED_BITS:
            raise _BadInfo(f"invalid info word 0x{info:08x} (unused bits set)")
        if kind == BTF_KIND_UNKN or kind >= NR_BTF_KINDS:
            raise _BadInfo(f"unknown BTF kind {kind}")
        skip = 3 + _EXTRA_WORDS[kind] + (info & 0xFFFF) * _ENTRY_WORDS[kind]
        self[info] = skip
        return skip


class BTF:
    """Parsed BTF: lazy type decoding, name look-up, size resolution."""

    ptr_size = 8  # x86-64 / arm64 kernels; what btf__resolve_size uses for PTR

    def __init__(self) -> None:  # use from_bytes / from_file / kernel
        self.base: BTF | None = None
        self.start_id = 1
        self.byteorder = "little"
        self._data = b""
        self._words: memoryview | array = array(_U32)
        self._offs = array(_U32)
        self._ss = 0  # absolute start / end of the string section in _data
        self._se = 0
        self._str_base = 0  # string offsets below this belong to the base BTF
        self._cache: dict[int, Type] = {}
        self._names: bytes | None = None  # packed u32 name offsets, one per own type
        self._name_index: dict[str, list[int]] | None = None  # name_index(), once built
        # (needle, exact, kind) -> ids: set by btf_cache, which saves and restores it
        self._find_memo: dict[tuple[bytes, bool, int | None], list[int]] | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_bytes(cls, data: bytes, base: BTF | None = None, *,
                   _index: bytes | None = None) -> BTF:
        """Parse raw BTF (a ``.BTF`` section, or split BTF on top of ``base``).

        ``_index``: the type offsets a previous parse of the same bytes computed
        (``btf_cache``); it replaces the indexing loop."""
        if not isinstance(data, bytes) and type(data).__name__ != "mmap":
            data = bytes(data)  # an mmap (btf_cache) is read in place: pages load lazily
        self = cls()
        self._data = data
        if len(data) < BTF_HEADER_LEN:
            raise BTFError(f"BTF data too short for a header ({len(data)} bytes)")
        if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
            order = "<"
        elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
            order = ">"
        else:
            raise BTFError(f"bad BTF magic 0x{struct.unpack_from('<H', data)[0]:04x}, "
                           f"expected 0x{BTF_MAGIC:04x}")
        self.byteorder = "little" if order == "<" else "big"
        _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            struct.unpack_from(order + "HBBIIIII", data)
        )
        if version != BTF_VERSION:
            raise BTFError(f"unsupported BTF version {version}")
        if hdr_len < BTF_HEADER_LEN or hdr_len > len(data):
            raise BTFError(f"bad BTF hdr_len {hdr_len} (data is {len(data)} bytes)")
        ts, te = hdr_len + type_off, hdr_len + type_off + type_len
        ss, se = hdr_len + str_off, hdr_len + str_off + str_len
        if te > len(data) or se > len(data):
            raise BTFError(f"BTF sections out of bounds (types {ts}..{te}, strings {ss}..{se}, "
                           f"data is {len(data)} bytes): truncated?")
        if type_off % 4 or type_len % 4:
            raise BTFError(f"BTF type section not 4-byte aligned (off {type_off}, len {type_len})")
        if base is None:
            if str_len == 0 or data[ss] != 0:
                raise BTFError("BTF string section must start with a NUL byte")
        if str_len and data[se - 1] != 0:
            raise BTFError("BTF string section not NUL-terminated")
        self._ss, self._se = ss, se
        if base is not None:
            self.base = base
            self.start_id = len(base)
            self._str_base = base._str_base + (base._se - base._ss)

        if order == _HOST_ORDER:
            self._words = memoryview(data)[ts:te].cast(_U32)
        else:
            words = array(_U32)
            words.frombytes(data[ts:te])
            words.byteswap()
            self._words = words
        if _index is None:
            self._offs = self._build_index(self._words)
        else:
            offs = array(_U32)
            offs.frombytes(_index)
            if offs and (offs[0] != 0 or offs[-1] >= len(self._words)):
                raise BTFError("BTF index does not match the data")
            self._offs = offs
        return self

    def _build_index(self, w: memoryview | array) -> array:
        """Word offset of every type record: the one loop over all types (kept minimal).

        The name offsets are collected in the same pass (cheaper than a second one): the
        packed column that :meth:`find` searches."""
        offs = array(_U32)
        names = array(_U32)
        append = offs.append
        nappend = names.append
        skip = _SkipTable()
        off = 0
        try:
            while True:
                nappend(w[off])  # IndexError here when off == len(w): the normal exit
                append(off)
                off += skip[w[off + 1]]
        except IndexError:
            pass
        except _BadInfo as e:
            raise BTFError(f"{e} at type id {self.start_id + len(offs) - 1}") from None
        if off != len(w) or len(names) != len(offs):
            tid = self.start_id + len(offs) - 1
            raise BTFError(f"BTF type section truncated: type id {tid} runs past its end")
        self._names = names.tobytes()
        return offs

    @classmethod
    def from_file(cls, path: PathLike, base: BTF | None = None) -> BTF:
        """Load raw BTF, xz-compressed BTF, or the ``.BTF`` section of an ELF file."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BTFError(f"cannot read BTF from {os.fspath(path)}: {e.strerror}") from None
        if data.startswith(_XZ_MAGIC):
            import lzma  # only when needed: most callers read uncompressed kernel BTF

            try:
                data = lzma.decompress(data)
            except lzma.LZMAError as e:
                raise BTFError(f"{os.fspath(path)}: bad xz data: {e}") from None
        if data.startswith(_ELF_MAGIC):
            data = _elf_btf_section(data, os.fspath(path))
        return cls.from_bytes(data, base)

    @classmethod
    def kernel(cls, path: PathLike = "/sys/kernel/btf/vmlinux") -> BTF:
        """The running kernel's BTF; a clear error when the kernel was built without it.

        The index and look-ups are reused from an on-disk cache (:mod:`pybpf.btf_cache`,
        keyed by the kernel's build ID) unless ``PYBPF_BTF_CACHE=0``."""
        if not os.path.exists(path):
            raise BTFError(f"{os.fspath(path)} not found: this kernel has no BTF "
                           "(CONFIG_DEBUG_INFO_BTF=y is needed, Linux 5.4+)")
        if os.environ.get("PYBPF_BTF_CACHE", "").strip().lower() not in ("0", "off", "no",
                                                                         "false"):
            from pybpf.btf_cache import load_cached

            return load_cached(path)
        return cls.from_file(path)

    # ----------------------------------------------------------------- access

    def raw_bytes(self) -> bytes:
        """The BTF blob this was parsed from (decompressed, as the kernel exposes it)."""
        return bytes(self._data)

    def __len__(self) -> int:
        """Number of type ids including void (and the base's types): like btf__type_cnt."""
        return self.start_id + len(self._offs)

    def __repr__(self) -> str:
        return f"<BTF {len(self)} types{' (split)' if self.base else ''}>"

    def _word_off(self, type_id: int) -> int:
        i = type_id - self.start_id
        if i < 0 or i >= len(self._offs):
            raise BTFError(f"type id {type_id} out of range (BTF has ids 0..{len(self) - 1})")
        return self._offs[i]

    def kind_of(self, type_id: int) -> int:
        """Kind of a type without decoding it."""
        if type_id < self.start_id:
            if self.base is not None and type_id >= 0:
                return self.base.kind_of(type_id)
            if type_id == 0:
                return BTF_KIND_UNKN
        return (self._words[self._word_off(type_id) + 1] >> 24) & 0x1F

    def name_of(self, type_id: int) -> str:
        """Name of a type without decoding it ("" when anonymous)."""
        if type_id < self.start_id:
            if self.base is not None and type_id >= 0:
                return self.base.name_of(type_id)
            if type_id == 0:
                return ""
        return self.string(self._words[self._word_off(type_id)])

    def type(self, type_id: int) -> Type:
        """The decoded type ``type_id`` (0 is void); decoded once, then cached."""
        t = self._cache.get(type_id)
        if t is not None:
            return t
        if type_id < self.start_id:
            if self.base is not None and type_id >= 0:
                return self.base.type(type_id)
            if type_id == 0:
                return VOID
        t = self._decode(type_id, self._word_off(type_id))
        self._cache[type_id] = t
        return t

    def iter_types(self) -> Iterator[Type]:
        """Every type of this BTF (not its base's), in id order, void excluded."""
        for type_id in range(self.start_id, len(self)):
            yield self.type(type_id)

    def _decode(self, type_id: int, off: int) -> Type:
        w = self._words
        s = self.string
        name_off, info, sz = w[off], w[off + 1], w[off + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        name = s(name_off)
        p = off + 3
        if kind == BTF_KIND_INT:
            enc = w[p]
            return Type(type_id, kind, name, vlen, kflag, size=sz, int_encoding=(enc >> 24) & 0xF,
                        int_offset=(enc >> 16) & 0xFF, int_bits=enc & 0xFF)
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            if kflag:
                members = tuple(
                    Member(s(w[i]), w[i + 1], w[i + 2] & 0xFFFFFF, w[i + 2] >> 24)
                    for i in range(p, p + 3 * vlen, 3)
                )
            else:
                members = tuple(
                    Member(s(w[i]), w[i + 1], w[i + 2], 0) for i in range(p, p + 3 * vlen, 3)
                )
            return Type(type_id, kind, name, vlen, kflag, size=sz, members=members)
        if kind == BTF_KIND_ENUM:
            if kflag:
                values = tuple(
                    EnumValue(s(w[i]), _s32(w[i + 1])) for i in range(p, p + 2 * vlen, 2)
                )
            else:
                values = tuple(EnumValue(s(w[i]), w[i + 1]) for i in range(p, p + 2 * vlen, 2))
            return Type(type_id, kind, name, vlen, kflag, size=sz, values=values)
        if kind == BTF_KIND_ENUM64:
            vals = []
            for i in range(p, p + 3 * vlen, 3):
                v = w[i + 2] << 32 | w[i + 1]
                if kflag and v >> 63:
                    v -= 1 << 64
                vals.append(EnumValue(s(w[i]), v))
            return Type(type_id, kind, name, vlen, kflag, size=sz, values=tuple(vals))
        if kind == BTF_KIND_ARRAY:
            return Type(type_id, kind, name, vlen, kflag, elem_type=w[p], index_type=w[p + 1],
                        nelems=w[p + 2])
        if kind == BTF_KIND_FUNC_PROTO:
            params = tuple(Param(s(w[i]), w[i + 1]) for i in range(p, p + 2 * vlen, 2))
            return Type(type_id, kind, name, vlen, kflag, type=sz, params=params)
        if kind == BTF_KIND_FUNC:
            return Type(type_id, kind, name, vlen, kflag, type=sz, linkage=vlen)
        if kind == BTF_KIND_VAR:
            return Type(type_id, kind, name, vlen, kflag, type=sz, linkage=w[p])
        if kind == BTF_KIND_DATASEC:
            secinfos = tuple(
                VarSecinfo(w[i], w[i + 1], w[i + 2]) for i in range(p, p + 3 * vlen, 3)
            )
            return Type(type_id, kind, name, vlen, kflag, size=sz, secinfos=secinfos)
        if kind == BTF_KIND_DECL_TAG:
            return Type(type_id, kind, name, vlen, kflag, type=sz, component_idx=_s32(w[p]))
        if kind == BTF_KIND_FLOAT:
            return Type(type_id, kind, name, vlen, kflag, size=sz)
        if kind == BTF_KIND_FWD:
            return Type(type_id, kind, name, vlen, kflag)
        # PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG (the index rejected other kinds).
        return Type(type_id, kind, name, vlen, kflag, type=sz)

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string section."""
        if offset < self._str_base:
            if self.base is not None and offset >= 0:
                return self.base.string(offset)
            raise BTFError(f"invalid string offset {offset}")
        start = self._ss + offset - self._str_base
        if start >= self._se:
            raise BTFError(f"string offset {offset} out of range (string section is "
                           f"{self._se - self._ss} bytes)")
        data = self._data
        end = data.find(b"\0", start, self._se)  # found: the section ends with NUL
        try:
            return data[start:end].decode()
        except UnicodeDecodeError:
            raise BTFError(f"string at offset {offset} is not valid UTF-8") from None

    # ----------------------------------------------------------------- look-up

    def _string_offsets(self, needle: bytes, exact: bool) -> list[int]:
        """Every string offset (base's included) whose string equals / starts with ``needle``.

        Searches anywhere, not only after a NUL, so encoders that share string suffixes work.
        """
        found = self.base._string_offsets(needle, exact) if self.base is not None else []
        if exact:
            needle += b"\0"
        find, se = self._data.find, self._se
        delta = self._str_base - self._ss
        p = find(needle, self._ss, se)
        while p >= 0:
            found.append(p + delta)
            p = find(needle, p + 1, se)
        return found

    def _ids_with_name_offsets(self, offsets: list[int]) -> list[int]:
        """Own type ids whose name_off is one of ``offsets``."""
        names = self._names
        if names is None:
            w = self._words
            names = self._names = array(_U32, map(w.__getitem__, self._offs)).tobytes()
        start = self.start_id
        if len(offsets) <= 8:  # ~0.5 ms per scan; the set pass below costs ~5 ms
            ids = []
            find = names.find
            for o in offsets:
                if o > _U32_MAX:
                    continue
                needle = struct.pack("=" + _U32, o)
                p = find(needle)
                while p >= 0:
                    if not p & 3:
                        ids.append(start + (p >> 2))
                    p = find(needle, p + 1)
            ids.sort()
            return ids
        wanted = set(offsets)
        return [start + i for i, o in enumerate(array(_U32, names)) if o in wanted]

    def name_index(self) -> dict[str, list[int]]:
        """Every name -> its type ids (ascending, base's first; anonymous types under "").

        Built once on demand (~70 ms for vmlinux's 127k types); :meth:`find` uses it from
        then on.  Strings are decoded once per distinct name offset, not once per type."""
        index = self._name_index
        if index is not None:
            return index
        index = {k: list(v) for k, v in self.base.name_index().items()} if self.base else {}
        names = self._names
        if names is None:
            w = self._words
            names = self._names = array(_U32, map(w.__getitem__, self._offs)).tobytes()
        by_off: dict[int, list[int]] = {}
        tid = self.start_id
        for off in array(_U32, names):
            ids = by_off.get(off)
            if ids is None:
                by_off[off] = [tid]
            else:
                ids.append(tid)
            tid += 1
        string = self.string
        for off, ids in by_off.items():
            name = string(off)
            have = index.get(name)
            if have is None:
                index[name] = ids
            else:
                have.extend(ids)
                have.sort()
        self._name_index = index
        return index

    def find(self, name: str, kind: int | None = None) -> list[int]:
        """All type ids named exactly ``name`` (and of ``kind`` if given), ascending."""
        try:
            needle = name.encode()
        except UnicodeEncodeError:
            return []
        if b"\0" in needle:
            return []
        return self._find(needle, True, kind)

    def find_prefix(self, prefix: str, kind: int | None = None) -> list[int]:
        """All type ids whose name starts with ``prefix`` (CO-RE flavors: "task_struct___")."""
        try:
            needle = prefix.encode()
        except UnicodeEncodeError:
            return []
        if b"\0" in needle:
            return []
        if not needle:
            ids = list(range(1, len(self)))
            return ids if kind is None else [i for i in ids if self.kind_of(i) == kind]
        return self._find(needle, False, kind)

    def _find(self, needle: bytes, exact: bool, kind: int | None) -> list[int]:
        memo = self._find_memo
        if memo is not None:
            key = (needle, exact, kind)
            ids = memo.get(key)
            if ids is None:
                ids = memo[key] = self._find_uncached(needle, exact, kind)
            return list(ids)
        return self._find_uncached(needle, exact, kind)

    def _find_uncached(self, needle: bytes, exact: bool, kind: int | None) -> list[int]:
        if exact and self._name_index is not None:
            ids = list(self._name_index.get(needle.decode(), ()))
            if kind is not None:
                ids = [i for i in ids if self.kind_of(i) == kind]
            return ids
        ids = self.base._find(needle, exact, kind) if self.base is not None else []
        own = self._ids_with_name_offsets(self._string_offsets(needle, exact))
        if kind is not None:
            w, offs, start = self._words, self._offs, self.start_id
            own = [i for i in own if (w[offs[i - start] + 1] >> 24) & 0x1F == kind]
        return ids + own

    def find_one(self, name: str, kind: int) -> int:
        """The id of the only ``kind`` type named ``name``; BTFError if none or several."""
        ids = self.find(name, kind)
        if len(ids) == 1:
            return ids[0]
        what = f"{KIND_NAMES.get(kind, kind)} '{name}'"
        if not ids:
            raise BTFError(f"{what} not found in BTF")
        raise BTFError(f"{what} is ambiguous in BTF: ids {ids}")

    def skip_mods_and_typedefs(self, type_id: int) -> int:
        """Follow TYPEDEF/VOLATILE/CONST/RESTRICT/TYPE_TAG to the underlying type id."""
        limit = len(self)
        t = self.type(type_id)
        while t.kind in _MODS_AND_TYPEDEF:
            limit -= 1
            if limit < 0:
                raise BTFError(f"reference loop through type id {type_id}")
            type_id = t.type
            t = self.type(type_id)
        return type_id

    def resolve_size(self, type_id: int) -> int:
        """Size in bytes of a type, like libbpf's btf__resolve_size (arrays multiply)."""
        orig = type_id
        nelems = 1
        for _ in range(_MAX_RESOLVE_DEPTH):
            t = self.type(type_id)
            k = t.kind
            if k in (BTF_KIND_INT, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM,
                     BTF_KIND_ENUM64, BTF_KIND_DATASEC, BTF_KIND_FLOAT):
                size = t.size
                break
            if k == BTF_KIND_PTR:
                size = self.ptr_size
                break
            if k in _MODS_AND_TYPEDEF or k in (BTF_KIND_VAR, BTF_KIND_DECL_TAG):
                type_id = t.type
            elif k == BTF_KIND_ARRAY:
                if nelems and t.nelems > _U32_MAX // nelems:
                    raise BTFError(f"size of type id {orig} overflows u32")
                nelems *= t.nelems
                type_id = t.elem_type
            else:
                raise BTFError(f"type id {orig} has no size ({t.kind_name} id {type_id})")
        else:
            raise BTFError(f"type id {orig}: type chain deeper than {_MAX_RESOLVE_DEPTH} "
                           "(reference loop?)")
        if nelems and size > _U32_MAX // nelems:
            raise BTFError(f"size of type id {orig} overflows u32")
        return nelems * size


def _elf_btf_section(data: bytes, where: str) -> bytes:
    """The contents of the ``.BTF`` section of an ELF file (32/64-bit, either byte order)."""
    try:
        if data[4] not in (1, 2) or data[5] not in (1, 2):
            raise BTFError(f"{where}: unsupported ELF class/data encoding")
        is64 = data[4] == 2
        e = "<" if data[5] == 1 else ">"
        if is64:
            shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
            shfmt = e + "IIQQQQ"
        else:
            shoff = struct.unpack_from(e + "I", data, 0x20)[0]
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)
            shfmt = e + "IIIIII"
        if shoff == 0 or shentsize < struct.calcsize(shfmt):
            raise BTFError(f"{where}: ELF file has no section headers")

        def shdr(i: int) -> tuple[int, ...]:
            return struct.unpack_from(shfmt, data, shoff + i * shentsize)

        if shnum == 0:  # extended numbering: real count in section 0's sh_size
            shnum = shdr(0)[5]
        if shstrndx == 0xFFFF:  # SHN_XINDEX: real index in section 0's sh_link
            shstrndx = struct.unpack_from(e + "I", data, shoff + (40 if is64 else 24))[0]
        if shnum > len(data) // shentsize:
            raise BTFError(f"{where}: bad ELF section count {shnum}")
        str_off = shdr(shstrndx)[4]
        for i in range(shnum):
            name, _type, _flags, _addr, off, size = shdr(i)
            if data[str_off + name:str_off + name + 5] == b".BTF\0":
                if off + size > len(data):
                    raise BTFError(f"{where}: .BTF section out of bounds")
                return data[off:off + size]
    except (struct.error, IndexError):
        raise BTFError(f"{where}: truncated or malformed ELF file") from None
    raise BTFError(f"{where}: ELF file has no .BTF section")
