"""``.BTF.ext``: what clang records per code section besides the types in ``.BTF``.

Three tables, each grouped by ELF section name: ``func_info`` (the FUNC type of every
function start), ``line_info`` (source line of instructions) and CO-RE relocations
(``struct bpf_core_relo``, 5.17's UAPI layout).  Instruction offsets are *bytes* from the
start of the section, as clang writes them; the linker turns them into instruction
indices of each program.  Layout: include/uapi/linux/btf.h and libbpf's ``btf_ext__new``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..btf import BTF
from ..errors import BTFError

BTF_EXT_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBI")  # magic, version, flags, hdr_len
_SEC = struct.Struct("<II")  # sec_name_off, num_info
_FUNC = struct.Struct("<II")  # insn_off, type_id
_LINE = struct.Struct("<IIII")  # insn_off, file_name_off, line_off, line_col
_CORE = struct.Struct("<IIII")  # insn_off, type_id, access_str_off, kind


@dataclass
class BTFExt:
    """Records by section name; offsets in bytes, strings resolved through ``.BTF``."""

    func_info: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    line_info: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    core_relos: dict[str, list[tuple[int, int, str, int]]] = field(default_factory=dict)


def parse_btf_ext(data: bytes, btf: BTF) -> BTFExt:
    """Parse a ``.BTF.ext`` section whose strings live in ``btf``."""
    if len(data) < 8:
        raise BTFError(".BTF.ext too short for its header")
    magic, version, _flags, hdr_len = _HDR.unpack_from(data)
    if magic != BTF_EXT_MAGIC:
        raise BTFError(f".BTF.ext: bad magic {magic:#06x}")
    if version != 1:
        raise BTFError(f".BTF.ext: unsupported version {version}")
    if hdr_len < 24 or hdr_len > len(data):
        raise BTFError(f".BTF.ext: bad header length {hdr_len}")
    words = struct.unpack_from(f"<{(hdr_len - 8) // 4}I", data, 8)
    out = BTFExt()
    tables = [(words[0], words[1], _FUNC, out.func_info),
              (words[2], words[3], _LINE, out.line_info)]
    if len(words) >= 6:  # CO-RE relocations: headers of 32 bytes and more (LLVM 11+)
        tables.append((words[4], words[5], _CORE, out.core_relos))
    for off, length, rec, dest in tables:
        if length:
            _parse_table(data, hdr_len + off, length, rec, dest, btf)
    # resolve access strings of CO-RE records
    for sec, relos in out.core_relos.items():
        out.core_relos[sec] = [(o, t, btf.string(a), k) for o, t, a, k in relos]  # type: ignore[misc]
    return out


def _parse_table(data: bytes, start: int, length: int, rec: struct.Struct, dest: dict,
                 btf: BTF) -> None:  # fmt: skip
    end = start + length
    if end > len(data) or length < 4:
        raise BTFError(".BTF.ext: a table runs past the end of the section")
    (rec_size,) = struct.unpack_from("<I", data, start)
    if rec_size < rec.size or rec_size % 4:
        raise BTFError(f".BTF.ext: record size {rec_size} is smaller than {rec.size}")
    pos = start + 4
    while pos < end:
        if pos + _SEC.size > end:
            raise BTFError(".BTF.ext: truncated section header")
        name_off, count = _SEC.unpack_from(data, pos)
        pos += _SEC.size
        if pos + count * rec_size > end:
            raise BTFError(".BTF.ext: records run past their table")
        name = btf.string(name_off)
        records = dest.setdefault(name, [])
        for i in range(count):
            records.append(rec.unpack_from(data, pos + i * rec_size))
        pos += count * rec_size
