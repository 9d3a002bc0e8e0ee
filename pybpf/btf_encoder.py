"""BTF builder: emit program BTF (types, FUNC/FUNC_PROTO for func_info, DATASEC/VAR for
global data, CO-RE "local" types) as the raw bytes the kernel and bpftool read.

Standard library only. Type ids are handed out from 1 in the order types are added; strings
are deduplicated (whole strings only, like libbpf's strset).
"""

from __future__ import annotations

import struct
from typing import Sequence, Tuple, Union

from pybpf.btf import (
    BTF_FUNC_EXTERN,
    BTF_FUNC_GLOBAL,
    BTF_FUNC_STATIC,
    BTF_HEADER_LEN,
    BTF_INT_BOOL,
    BTF_INT_CHAR,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    BTF_MAGIC,
    BTF_VAR_GLOBAL_ALLOCATED,
    BTF_VAR_GLOBAL_EXTERN,
    BTF_VAR_STATIC,
    BTF_VERSION,
    Type,
)
from pybpf.errors import BTFError

# Re-exported so callers can import the linkage constants next to the builder.
__all__ = ["BTFBuilder", "BTF_FUNC_STATIC", "BTF_FUNC_GLOBAL", "BTF_FUNC_EXTERN",
           "BTF_VAR_STATIC", "BTF_VAR_GLOBAL_ALLOCATED", "BTF_VAR_GLOBAL_EXTERN"]

MemberSpec = Union[Tuple[str, int, int], Tuple[str, int, int, int]]

_MAX_VLEN = 0xFFFF
_U32_MAX = 0xFFFFFFFF


def _check_u32(what: str, v: int) -> int:
    if not 0 <= v <= _U32_MAX:
        raise BTFError(f"{what} {v} does not fit in u32")
    return v


class BTFBuilder:
    """Accumulates types and strings; :meth:`encode` produces a raw BTF blob."""

    def __init__(self) -> None:
        self._words: list[int] = []  # all type records, as u32 words
        self._count = 0  # number of types added (last id)
        self._strings = bytearray(b"\0")
        self._str_offsets: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        """Number of type ids including void, like ``len(BTF)``."""
        return self._count + 1

    def add_string(self, s: str) -> int:
        """Offset of ``s`` in the string section (added once; "" is offset 0)."""
        off = self._str_offsets.get(s)
        if off is None:
            raw = s.encode()
            if b"\0" in raw:
                raise BTFError(f"BTF string {s!r} contains a NUL byte")
            off = len(self._strings)
            self._strings += raw + b"\0"
            self._str_offsets[s] = off
        return off

    def _add(self, name: str, kind: int, vlen: int, kflag: bool, size_or_type: int,
             extra: Sequence[int] = ()) -> int:
        if not 0 <= vlen <= _MAX_VLEN:
            raise BTFError(f"too many entries ({vlen}) for one BTF type '{name}'")
        info = (int(kflag) << 31) | (kind << 24) | vlen
        self._words += (self.add_string(name), info, _check_u32("size/type", size_or_type))
        self._words += extra
        self._count += 1
        return self._count

    # ---------------------------------------------------------------- scalar & modifier kinds

    def add_int(self, name: str, size: int, *, signed: bool = False, char: bool = False,
                bool_: bool = False, bits: int | None = None, offset: int = 0) -> int:
        """An INT of ``size`` bytes (``bits`` defaults to all of them)."""
        if size not in (1, 2, 4, 8, 16):
            raise BTFError(f"INT '{name}': size {size} is not 1, 2, 4, 8 or 16")
        nbits = size * 8 if bits is None else bits
        if not 0 < nbits <= 128 or offset + nbits > size * 8:
            raise BTFError(f"INT '{name}': bad bit layout (offset {offset}, bits {nbits})")
        enc = (BTF_INT_SIGNED if signed else 0) | (BTF_INT_CHAR if char else 0) | (
            BTF_INT_BOOL if bool_ else 0
        )
        return self._add(name, BTF_KIND_INT, 0, False, size, (enc << 24 | offset << 16 | nbits,))

    def add_float(self, name: str, size: int) -> int:
        return self._add(name, BTF_KIND_FLOAT, 0, False, size)

    def add_ptr(self, type_id: int) -> int:
        return self._add("", BTF_KIND_PTR, 0, False, type_id)

    def add_const(self, type_id: int) -> int:
        return self._add("", BTF_KIND_CONST, 0, False, type_id)

    def add_volatile(self, type_id: int) -> int:
        return self._add("", BTF_KIND_VOLATILE, 0, False, type_id)

    def add_restrict(self, type_id: int) -> int:
        return self._add("", BTF_KIND_RESTRICT, 0, False, type_id)

    def add_type_tag(self, name: str, type_id: int) -> int:
        return self._add(name, BTF_KIND_TYPE_TAG, 0, False, type_id)

    def add_typedef(self, name: str, type_id: int) -> int:
        return self._add(name, BTF_KIND_TYPEDEF, 0, False, type_id)

    def add_array(self, elem_type: int, index_type: int, nelems: int) -> int:
        return self._add("", BTF_KIND_ARRAY, 0, False, 0, (
            _check_u32("elem type", elem_type), _check_u32("index type", index_type),
            _check_u32("nelems", nelems)))

    # ---------------------------------------------------------------- aggregates

    def _add_composite(self, kind: int, name: str, size: int,
                       members: Sequence[MemberSpec]) -> int:
        kflag = any(len(m) > 3 and m[3] for m in members)
        extra: list[int] = []
        for m in members:
            mname, mtype, bit_offset = m[0], m[1], m[2]
            bitfield_size = m[3] if len(m) > 3 else 0
            if kflag:
                if not 0 <= bit_offset < 1 << 24 or not 0 <= bitfield_size < 256:
                    raise BTFError(f"'{name}.{mname}': bitfield offset/size out of range")
                off = bitfield_size << 24 | bit_offset
            else:
                off = _check_u32(f"'{name}.{mname}' bit offset", bit_offset)
            extra += (self.add_string(mname), _check_u32("member type", mtype), off)
        return self._add(name, kind, len(members), kflag, size, extra)

    def add_struct(self, name: str, size: int, members: Sequence[MemberSpec]) -> int:
        """A STRUCT; members are (name, type, bit_offset[, bitfield_size]).

        kflag (bitfield sizes encoded in the offset word) is set when any member is a bitfield.
        """
        return self._add_composite(BTF_KIND_STRUCT, name, size, members)

    def add_union(self, name: str, size: int, members: Sequence[MemberSpec]) -> int:
        return self._add_composite(BTF_KIND_UNION, name, size, members)

    def add_enum(self, name: str, size: int, values: Sequence[tuple[str, int]], *,
                 signed: bool = False) -> int:
        """ENUM (ENUM64 when ``size`` is 8); kflag marks signed values (set if any is < 0)."""
        signed = signed or any(v < 0 for _, v in values)
        bits = 64 if size == 8 else 32
        lo = -(1 << (bits - 1)) if signed else 0
        hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        extra: list[int] = []
        for vname, v in values:
            if not lo <= v <= hi:
                raise BTFError(f"enum '{name}': value {vname}={v} out of range")
            extra.append(self.add_string(vname))
            if bits == 64:
                v &= (1 << 64) - 1
                extra += (v & _U32_MAX, v >> 32)
            else:
                extra.append(v & _U32_MAX)
        kind = BTF_KIND_ENUM64 if bits == 64 else BTF_KIND_ENUM
        return self._add(name, kind, len(values), signed, size, extra)

    def add_fwd(self, name: str, *, union: bool = False) -> int:
        return self._add(name, BTF_KIND_FWD, 0, union, 0)

    # ---------------------------------------------------------------- functions & data

    def add_func_proto(self, ret_type: int, params: Sequence[tuple[str, int]]) -> int:
        """A FUNC_PROTO; a trailing ("", 0) parameter marks varargs."""
        extra: list[int] = []
        for pname, ptype in params:
            extra += (self.add_string(pname), _check_u32("param type", ptype))
        return self._add("", BTF_KIND_FUNC_PROTO, len(params), False, ret_type, extra)

    def add_func(self, name: str, proto_id: int, linkage: int = BTF_FUNC_GLOBAL) -> int:
        return self._add(name, BTF_KIND_FUNC, linkage, False, proto_id)

    def add_var(self, name: str, type_id: int, linkage: int = BTF_VAR_GLOBAL_ALLOCATED) -> int:
        return self._add(name, BTF_KIND_VAR, 0, False, type_id, (_check_u32("linkage", linkage),))

    def add_datasec(self, name: str, size: int, secinfos: Sequence[tuple[int, int, int]]) -> int:
        """A DATASEC; secinfos are (var type id, offset, size)."""
        extra: list[int] = []
        for tid, off, sz in secinfos:
            extra += (_check_u32("var type", tid), _check_u32("offset", off),
                      _check_u32("size", sz))
        return self._add(name, BTF_KIND_DATASEC, len(secinfos), False, size, extra)

    def add_decl_tag(self, name: str, type_id: int, component_idx: int = -1) -> int:
        """A DECL_TAG on a type (-1) or on its member/parameter ``component_idx``."""
        if not -1 <= component_idx <= 0x7FFFFFFF:
            raise BTFError(f"decl tag '{name}': bad component_idx {component_idx}")
        return self._add(name, BTF_KIND_DECL_TAG, 0, False, type_id,
                         (component_idx & _U32_MAX,))

    # ---------------------------------------------------------------- parsed types

    def add_type(self, t: Type) -> int:
        """Encode a parsed :class:`~pybpf.btf.Type` as is (type ids inside it are kept).

        ``BTF.from_bytes(b.encode()).type(i) == t`` for the i-th type added: the inverse of
        the parser, for copying or minimizing BTF (``kflag`` and ``vlen`` are taken from
        ``t``, so even unusual encodings survive)."""
        k = t.kind
        if k == BTF_KIND_INT:
            word = t.int_encoding << 24 | t.int_offset << 16 | t.int_bits
            if t.int_encoding > 0xF or t.int_offset > 0xFF or t.int_bits > 0xFF:
                raise BTFError(f"INT '{t.name}': bad encoding word")
            return self._add(t.name, k, t.vlen, t.kflag, t.size, (word,))
        if k in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            extra: list[int] = []
            for m in t.members:
                if t.kflag:
                    if not 0 <= m.bit_offset < 1 << 24 or not 0 <= m.bitfield_size < 256:
                        raise BTFError(f"'{t.name}.{m.name}': bitfield out of range")
                    off = m.bitfield_size << 24 | m.bit_offset
                elif m.bitfield_size:
                    raise BTFError(f"'{t.name}.{m.name}': bitfield without kflag")
                else:
                    off = _check_u32("bit offset", m.bit_offset)
                extra += (self.add_string(m.name), _check_u32("member type", m.type), off)
            return self._add(t.name, k, len(t.members), t.kflag, t.size, extra)
        if k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            extra = []
            for v in t.values:
                extra.append(self.add_string(v.name))
                if k == BTF_KIND_ENUM64:
                    u = v.value & 0xFFFFFFFFFFFFFFFF
                    extra += (u & _U32_MAX, u >> 32)
                else:
                    extra.append(v.value & _U32_MAX)
            return self._add(t.name, k, len(t.values), t.kflag, t.size, extra)
        if k == BTF_KIND_ARRAY:
            return self._add(t.name, k, t.vlen, t.kflag, 0, (
                _check_u32("elem type", t.elem_type), _check_u32("index type", t.index_type),
                _check_u32("nelems", t.nelems)))
        if k == BTF_KIND_FUNC_PROTO:
            extra = []
            for p in t.params:
                extra += (self.add_string(p.name), _check_u32("param type", p.type))
            return self._add(t.name, k, len(t.params), t.kflag, t.type, extra)
        if k == BTF_KIND_FUNC:
            return self._add(t.name, k, t.linkage, t.kflag, t.type)
        if k == BTF_KIND_VAR:
            return self._add(t.name, k, t.vlen, t.kflag, t.type,
                             (_check_u32("linkage", t.linkage),))
        if k == BTF_KIND_DATASEC:
            extra = []
            for si in t.secinfos:
                extra += (_check_u32("var type", si.type), _check_u32("offset", si.offset),
                          _check_u32("size", si.size))
            return self._add(t.name, k, len(t.secinfos), t.kflag, t.size, extra)
        if k == BTF_KIND_DECL_TAG:
            return self._add(t.name, k, t.vlen, t.kflag, t.type,
                             (t.component_idx & _U32_MAX,))
        if k in (BTF_KIND_FLOAT,):
            return self._add(t.name, k, t.vlen, t.kflag, t.size)
        if k == BTF_KIND_FWD:
            return self._add(t.name, k, t.vlen, t.kflag, 0)
        if k in (BTF_KIND_PTR, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST,
                 BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG):
            return self._add(t.name, k, t.vlen, t.kflag, t.type)
        raise BTFError(f"cannot encode BTF kind {k}")

    # ---------------------------------------------------------------- output

    def encode(self, byteorder: str = "little") -> bytes:
        """Header (magic 0xeB9F, version 1, flags 0, hdr_len 24) + types + strings."""
        e = {"little": "<", "big": ">"}.get(byteorder)
        if e is None:
            raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
        types = struct.pack(f"{e}{len(self._words)}I", *self._words)
        strings = bytes(self._strings)
        header = struct.pack(e + "HBBIIIII", BTF_MAGIC, BTF_VERSION, 0, BTF_HEADER_LEN,
                             0, len(types), len(types), len(strings))
        return header + types + strings
