"""The object's BTF as the kernel accepts it: libbpf's ``bpf_object__finalize_btf``.

clang leaves DATASEC sizes and VAR offsets zero (the ELF symbols know them), writes
``extern`` linkage the kernel refuses, and the ``.kconfig`` DATASEC has no layout until
the externs are placed.  Patched in a copy of the raw bytes, so type ids and string
offsets (which ``.BTF.ext``, func_info and line_info refer to) do not move.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

from ..btf import BTF, BTF_KIND_DATASEC, BTF_KIND_FUNC, BTF_KIND_VAR
from ..errors import BTFError

BTF_VAR_STATIC = 0
BTF_VAR_GLOBAL_ALLOCATED = 1
BTF_VAR_GLOBAL_EXTERN = 2
BTF_FUNC_GLOBAL = 1
BTF_FUNC_EXTERN = 2


class BTFPatcher:
    """Writes into the raw BTF by type id: info words, VAR linkage, DATASEC entries."""

    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self.raw = bytearray(btf.raw_bytes())
        hdr_len, type_off = struct.unpack_from("<II", self.raw, 4)
        self._types = hdr_len + type_off

    def _pos(self, type_id: int) -> int:
        return self._types + 4 * self.btf._word_off(type_id)

    def set_size(self, type_id: int, size: int) -> None:
        struct.pack_into("<I", self.raw, self._pos(type_id) + 8, size)

    def set_var_linkage(self, type_id: int, linkage: int) -> None:
        struct.pack_into("<I", self.raw, self._pos(type_id) + 12, linkage)

    def set_func_linkage(self, type_id: int, linkage: int) -> None:
        pos = self._pos(type_id) + 4
        (info,) = struct.unpack_from("<I", self.raw, pos)
        struct.pack_into("<I", self.raw, pos, (info & ~0xFFFF) | linkage)

    def set_secinfos(self, type_id: int, entries: list[tuple[int, int, int]]) -> None:
        pos = self._pos(type_id) + 12
        for i, (t, off, size) in enumerate(entries):
            struct.pack_into("<III", self.raw, pos + 12 * i, t, off, size)

    def result(self) -> BTF:
        return BTF.from_bytes(bytes(self.raw))


def finalize_btf(
    btf: BTF,
    section_size: Callable[[str], Optional[int]],
    symbol: Callable[[str], Optional[tuple[int, bool]]],
    kconfig_offsets: dict[str, int],
    kconfig_size: int,
) -> BTF:
    """DATASEC sizes from their ELF sections, VAR offsets from their symbols (``symbol``
    gives ``(value, hidden)``), extern VARs of ``.kconfig`` placed at their offsets,
    extern FUNCs (kfuncs) made global; VARs sorted by offset, as libbpf does."""
    p = BTFPatcher(btf)
    for t in btf.iter_types():
        if t.kind == BTF_KIND_FUNC and t.linkage == BTF_FUNC_EXTERN:
            p.set_func_linkage(t.id, BTF_FUNC_GLOBAL)
        if t.kind != BTF_KIND_DATASEC:
            continue
        entries = [(v.type, v.offset, v.size) for v in t.secinfos]
        if t.name == ".kconfig":
            size = kconfig_size
            fixed = []
            for vt, _off, vsize in entries:
                name = btf.type(vt).name
                if name not in kconfig_offsets:
                    raise BTFError(f".kconfig: no extern symbol for BTF variable {name!r}")
                p.set_var_linkage(vt, BTF_VAR_GLOBAL_ALLOCATED)
                fixed.append((vt, kconfig_offsets[name], vsize))
            entries = fixed
        elif t.name == ".ksyms":
            size = t.size
        else:
            size = t.size
            fixup = size == 0
            if fixup:
                found = section_size(t.name)
                if found is None:
                    raise BTFError(f"DATASEC {t.name!r} has no ELF section")
                size = found
            fixed = []
            for vt, off, vsize in entries:
                var = btf.type(vt)
                if var.kind != BTF_KIND_VAR or var.linkage in (BTF_VAR_STATIC,
                                                               BTF_VAR_GLOBAL_EXTERN):
                    fixed.append((vt, off, vsize))
                    continue
                sym = symbol(var.name)
                if sym is None:
                    raise BTFError(f"DATASEC {t.name!r}: no ELF symbol for variable {var.name!r}")
                value, hidden = sym
                if hidden:
                    p.set_var_linkage(vt, BTF_VAR_STATIC)
                fixed.append((vt, value if fixup else off, vsize))
            entries = fixed
        p.set_size(t.id, size)
        p.set_secinfos(t.id, sorted(entries, key=lambda e: e[1]))
    return p.result()
