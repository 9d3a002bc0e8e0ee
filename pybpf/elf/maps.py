"""Map definitions of a BPF object: BTF-defined ``.maps`` and the legacy ``maps`` section.

A BTF-defined map is a variable of an anonymous struct whose members only carry types:
``__uint(name, N)`` is ``int (*name)[N]`` (N is the array's length), ``__type(name, T)``
is ``T *name``, ``__array(name, T)`` is ``T *name[]`` (the inner map of a map-in-map, or
the programs of a prog array).  libbpf's ``parse_btf_map_def`` reads the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

from ..btf import (
    BTF,
    BTF_KIND_ARRAY,
    BTF_KIND_DATASEC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_VAR,
)
from ..errors import PyBPFError

_UINT_FIELDS = ("type", "max_entries", "map_flags", "numa_node", "key_size", "value_size",
                "pinning", "map_extra")  # fmt: skip


@dataclass
class MapDef:
    """One map as the object declares it (sizes resolved from BTF types)."""

    name: str
    type: int = 0
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0
    map_flags: int = 0
    numa_node: int = 0
    pinning: int = 0
    map_extra: int = 0
    key_type_id: int = 0
    value_type_id: int = 0
    inner: Optional[MapDef] = None
    has_values: bool = False  # __array(values, ...): initial slots from relocations
    values_offset: int = 0  # where the values array starts in the definition
    init_slots: dict[int, str] = field(default_factory=dict)  # index -> map/program name
    section_offset: int = 0
    section_size: int = 0


def _uint(btf: BTF, map_name: str, member: str, type_id: int) -> int:
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind != BTF_KIND_PTR:
        raise PyBPFError(f"map {map_name!r}: {member} must be __uint(), not {t.kind_name}")
    arr = btf.type(t.type)
    if arr.kind != BTF_KIND_ARRAY:
        raise PyBPFError(f"map {map_name!r}: {member} must be __uint() (pointer to an array)")
    return arr.nelems


def parse_map_struct(btf: BTF, name: str, struct_id: int, *, inner: bool = False) -> MapDef:
    """Read one map definition struct (libbpf's ``parse_btf_map_def``)."""
    t = btf.type(btf.skip_mods_and_typedefs(struct_id))
    if t.kind != BTF_KIND_STRUCT:
        raise PyBPFError(f"map {name!r}: definition is a {t.kind_name}, not a struct")
    d = MapDef(name)
    for m in t.members:
        if m.name in _UINT_FIELDS:
            setattr(d, m.name, _uint(btf, name, m.name, m.type))
        elif m.name in ("key", "value"):
            ptr = btf.type(btf.skip_mods_and_typedefs(m.type))
            if ptr.kind != BTF_KIND_PTR:
                raise PyBPFError(f"map {name!r}: {m.name} must be __type(), not {ptr.kind_name}")
            size = btf.resolve_size(ptr.type)
            declared = d.key_size if m.name == "key" else d.value_size
            if declared and declared != size:
                raise PyBPFError(f"map {name!r}: {m.name} type is {size} bytes, "
                                 f"{m.name}_size says {declared}")
            setattr(d, m.name + "_size", size)
            setattr(d, m.name + "_type_id", ptr.type)
        elif m.name == "values":
            if inner:
                raise PyBPFError(f"map {name!r}: an inner map cannot have values")
            arr = btf.type(btf.skip_mods_and_typedefs(m.type))
            if arr.kind != BTF_KIND_ARRAY or arr.nelems != 0:
                raise PyBPFError(f"map {name!r}: values must be __array() (a flexible array)")
            ptr = btf.type(btf.skip_mods_and_typedefs(arr.elem_type))
            if ptr.kind != BTF_KIND_PTR:
                raise PyBPFError(f"map {name!r}: values must be an array of pointers")
            d.has_values = True
            d.values_offset = m.bit_offset // 8
            pointee = btf.type(btf.skip_mods_and_typedefs(ptr.type))
            if pointee.kind == BTF_KIND_STRUCT:  # map-in-map: the inner map's definition
                d.inner = parse_map_struct(btf, name + ".inner", ptr.type, inner=True)
            elif pointee.kind != BTF_KIND_FUNC_PROTO:  # prog array: int (*)(void *)
                raise PyBPFError(f"map {name!r}: values of {pointee.kind_name}: neither "
                                 "maps nor programs")  # fmt: skip
            if d.value_size not in (0, 4):
                raise PyBPFError(f"map {name!r}: values are fds, value_size must be 4")
            d.value_size = 4
        else:
            raise PyBPFError(f"map {name!r}: unknown map attribute {m.name!r}")
    return d


def btf_maps(btf: BTF) -> list[MapDef]:
    """Every map of the ``.maps`` DATASEC, in declaration order (offsets fixed up)."""
    out = []
    for sec_id in btf.find(".maps", BTF_KIND_DATASEC):
        for vsi in btf.type(sec_id).secinfos:
            var = btf.type(vsi.type)
            if var.kind != BTF_KIND_VAR:
                raise PyBPFError(f".maps: entry {var.name!r} is a {var.kind_name}, not a variable")
            d = parse_map_struct(btf, var.name, var.type)
            d.section_offset = vsi.offset
            d.section_size = vsi.size  # with an initialised flexible values[] array
            out.append(d)
    return out


_LEGACY = struct.Struct("<IIIII")  # struct bpf_map_def: type, key/value size, entries, flags


def legacy_map(name: str, data: bytes, offset: int, size: int) -> MapDef:
    """A ``struct bpf_map_def`` of the legacy ``maps`` section (before BTF-defined maps)."""
    if size < _LEGACY.size or offset + size > len(data):
        raise PyBPFError(f"legacy map {name!r}: definition of {size} bytes is too short")
    mtype, ks, vs, n, flags = _LEGACY.unpack_from(data, offset)
    if any(data[offset + _LEGACY.size : offset + size]):
        raise PyBPFError(f"legacy map {name!r}: unknown non-zero fields in its definition")
    return MapDef(name, mtype, ks, vs, n, flags, section_offset=offset)
