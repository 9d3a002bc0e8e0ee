"""Values of a BTF type as Python values and back: what a map's keys and values, a ring
buffer's records and a global variable are in a compiled object.

Integers (and enums, bools, pointers) are ints, ``char`` arrays are bytes up to the first
NUL, other arrays lists, structs and unions dicts by member name (anonymous members are
merged in), bitfields ints.  :class:`BTFCodec` has the ``size``/``pack``/``unpack`` of
:mod:`pybpf.maps` types, so a map reads typed with no format written by hand.
"""

from __future__ import annotations

from typing import Any, Union

from ..btf import (
    BTF,
    BTF_KIND_ARRAY,
    BTF_KIND_DATASEC,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_UNION,
)
from ..errors import PyBPFError

BTF_INT_SIGNED = 1
BTF_INT_CHAR = 2


class BTFCodec:
    """Converts between bytes and Python values for one BTF type."""

    def __init__(self, btf: BTF, type_id: int) -> None:
        self.btf = btf
        self.type_id = type_id
        self.size = btf.resolve_size(type_id) if type_id else 0

    def unpack(self, data: bytes) -> Any:
        return decode(self.btf, self.type_id, bytes(data))

    def pack(self, value: Any) -> bytes:
        return encode(self.btf, self.type_id, value)


def _is_char(btf: BTF, type_id: int) -> bool:
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    return t.kind == BTF_KIND_INT and t.size == 1 and (
        bool(t.int_encoding & BTF_INT_CHAR) or t.name in ("char", "signed char", "unsigned char")
    )


def _signed(t: Any) -> bool:
    if t.kind == BTF_KIND_INT:
        return bool(t.int_encoding & BTF_INT_SIGNED)
    if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
        return bool(t.kflag)
    return False


def decode(btf: BTF, type_id: int, data: bytes) -> Any:
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_PTR):
        size = 8 if t.kind == BTF_KIND_PTR else t.size
        value = int.from_bytes(data[:size], "little", signed=_signed(t))
        if t.kind == BTF_KIND_INT and t.int_bits and t.int_bits < size * 8:
            value &= (1 << t.int_bits) - 1
        return value
    if t.kind == BTF_KIND_FLOAT:
        import struct

        return struct.unpack({4: "<f", 8: "<d"}[t.size], data[: t.size])[0]
    if t.kind == BTF_KIND_ARRAY:
        if _is_char(btf, t.elem_type):
            return data[: t.nelems].split(b"\0", 1)[0]
        esize = btf.resolve_size(t.elem_type)
        return [decode(btf, t.elem_type, data[i * esize : (i + 1) * esize])
                for i in range(t.nelems)]  # fmt: skip
    if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        out: dict[str, Any] = {}
        for m in t.members:
            off = m.bit_offset // 8
            if m.bitfield_size:
                raw = int.from_bytes(data[off : off + 8].ljust(8, b"\0"), "little")
                value = (raw >> (m.bit_offset % 8)) & ((1 << m.bitfield_size) - 1)
            else:
                size = btf.resolve_size(m.type)
                value = decode(btf, m.type, data[off : off + size])
            if m.name:
                out[m.name] = value
            elif isinstance(value, dict):
                out.update(value)
        return out
    if t.kind == BTF_KIND_DATASEC:
        return {btf.type(v.type).name: decode(btf, btf.type(v.type).type,
                                              data[v.offset : v.offset + v.size])
                for v in t.secinfos}  # fmt: skip
    return bytes(data)


def encode(btf: BTF, type_id: int, value: Any) -> bytes:
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    size = btf.resolve_size(type_id)
    if isinstance(value, (bytes, bytearray)) and t.kind not in (BTF_KIND_INT,):
        if len(value) > size:
            raise PyBPFError(f"{len(value)} bytes do not fit in a {size}-byte {t.kind_name}")
        return bytes(value).ljust(size, b"\0")
    if t.kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_PTR):
        value = _int(value)
        bits = 8 * (8 if t.kind == BTF_KIND_PTR else t.size)
        lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if _signed(t) else (0, 1 << bits)
        if not lo <= value < hi:
            raise PyBPFError(f"{value} does not fit in {t.name or t.kind_name} ({bits} bits)")
        return value.to_bytes(bits // 8, "little", signed=_signed(t))
    if t.kind == BTF_KIND_ARRAY:
        if isinstance(value, str) and _is_char(btf, t.elem_type):
            raw = value.encode()
            if len(raw) >= t.nelems:
                raise PyBPFError(f"{value!r} does not fit in char[{t.nelems}] with its NUL")
            return raw.ljust(size, b"\0")
        items = list(value)
        if len(items) > t.nelems:
            raise PyBPFError(f"{len(items)} values for an array of {t.nelems}")
        return b"".join(encode(btf, t.elem_type, v) for v in items).ljust(size, b"\0")
    if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) and isinstance(value, dict):
        buf = bytearray(size)
        names = {m.name: m for m in t.members}
        for k, v in value.items():
            m = names.get(k)
            if m is None or m.bitfield_size:
                raise PyBPFError(f"{t.name or 'struct'}: no settable member {k!r}")
            raw = encode(btf, m.type, v)
            buf[m.bit_offset // 8 : m.bit_offset // 8 + len(raw)] = raw
        return bytes(buf)
    if t.kind == BTF_KIND_DATASEC and isinstance(value, dict):
        buf = bytearray(size)
        by_name = {btf.type(v.type).name: v for v in t.secinfos}
        for k, v in value.items():
            if k not in by_name:
                raise PyBPFError(f"{t.name}: no variable {k!r}")
            vsi = by_name[k]
            buf[vsi.offset : vsi.offset + vsi.size] = encode(btf, btf.type(vsi.type).type, v)
        return bytes(buf)
    raise PyBPFError(f"cannot encode {value!r} as {t.kind_name} {t.name}")


def _int(value: Union[int, str, bool]) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "y", "yes"):
            return 1
        if v in ("false", "n", "no"):
            return 0
        try:
            return int(v, 0)
        except ValueError:
            raise PyBPFError(f"{value!r} is not an integer") from None
    raise PyBPFError(f"{value!r} is not an integer")
