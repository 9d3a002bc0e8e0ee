"""A clang-built ``.bpf.o`` as pybpf's pure :class:`~pybpf.object.ObjectSpec`.

What libbpf's ``bpf_object__open`` does, in its order: read the ELF, fix up and parse
the BTF, collect externs (``.kconfig`` laid out as libbpf lays it out), maps (BTF-defined,
legacy, global data), programs (every function of an executable section; ``.text``
holds subprograms), apply the ELF relocations of their instructions (maps, global data,
externs), then link each program with the subprograms it calls (libbpf's depth-first
order, so instructions match libbpf's to the slot) and hand each its func_info,
line_info and CO-RE records.  :func:`pybpf.object.prepare` does the rest.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Optional

from .. import isa
from ..btf import BTF, BTF_KIND_DATASEC, BTF_KIND_FUNC, BTF_KIND_VAR
from ..core import CoreRelo
from ..errors import PyBPFError
from ..object import MapSpec, ObjectSpec, ProgramSpec
from ..uapi import BPF_F_MMAPABLE, BPF_F_RDONLY_PROG, BPF_MAP_TYPE_ARRAY
from .btf_ext import BTFExt, parse_btf_ext
from .btf_fixup import BTF_VAR_STATIC, finalize_btf
from .maps import MapDef, btf_maps, legacy_map
from .reader import (
    SHN_UNDEF,
    SHT_NOBITS,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STB_WEAK,
    STT_FUNC,
    STT_SECTION,
    STV_HIDDEN,
    STV_INTERNAL,
    ElfError,
    ElfFile,
    Section,
    Symbol,
)
from .sections import find_section_def

BPF_OBJ_NAME_LEN = 16
_SLOT = struct.Struct("<BBhi")
_LD_IMM64 = isa.LD_IMM64
_CALL = isa.BPF_JMP | isa.BPF_CALL


@dataclass
class Variable:
    """A global variable of a data section (``const volatile`` ones in ``.rodata``)."""

    name: str
    map: str
    section: str
    offset: int
    size: int
    type_id: int
    readonly: bool


@dataclass
class Extern:
    """An ``extern`` the object expects libbpf to resolve: ``.kconfig`` (``CONFIG_*``,
    ``LINUX_KERNEL_VERSION``...) placed in the ``.kconfig`` map, or ``.ksyms``."""

    name: str
    kind: str  # "kconfig" or "ksym"
    weak: bool
    type_id: int  # the VAR's (or FUNC's) type
    size: int = 0
    align: int = 1
    offset: int = 0


@dataclass
class Function:
    name: str
    section: Section
    start: int  # slot within the section
    end: int
    sym: Symbol


@dataclass
class ElfObject:
    """The parsed object: the pure spec, plus what setting globals and externs needs."""

    name: str
    spec: ObjectSpec
    btf: Optional[BTF]
    variables: dict[str, Variable] = field(default_factory=dict)
    externs: list[Extern] = field(default_factory=list)
    kconfig_map: Optional[str] = None
    license: str = ""
    kern_version: int = 0
    autoload: dict[str, bool] = field(default_factory=dict)

    def map_spec(self, name: str) -> MapSpec:
        for m in self.spec.maps:
            if m.name == name:
                return m
        raise PyBPFError(f"{self.name}: no map {name!r}")


def object_name(path: str) -> str:
    """libbpf's object name: the file's base name up to its first dot."""
    return os.path.basename(path).split(".", 1)[0]


def internal_map_name(obj_name: str, real_name: str) -> str:
    """libbpf's ``internal_map_name``: ``runqslow.rodata`` for ``.rodata`` of runqslower."""
    sfx_len = min(max(7, len(real_name)), BPF_OBJ_NAME_LEN - 1)
    pfx_len = 0 if "." in real_name[1:] else min(BPF_OBJ_NAME_LEN - sfx_len - 1, len(obj_name))
    name = (obj_name[:pfx_len] + real_name[:sfx_len])[: BPF_OBJ_NAME_LEN - 1]
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)


def _is_data(sec: Section) -> Optional[str]:
    """"data", "rodata" or "bss" for the sections libbpf turns into global-data maps."""
    n = sec.name
    if sec.type == SHT_PROGBITS and not sec.executable:
        if n == ".data" or n.startswith(".data."):
            return "data"
        if n == ".rodata" or n.startswith(".rodata."):
            return "rodata"
    if sec.type == SHT_NOBITS and (n == ".bss" or n.startswith(".bss.")):
        return "bss"
    return None


def parse_object(data: bytes, name: str = "object", where: str = "") -> ElfObject:
    """Parse an object file's bytes; ``name`` as libbpf names it (prefix of data maps)."""
    where = where or name
    try:
        return _Parser(data, name, where).run()
    except PyBPFError as err:
        raise ElfError(f"{where}: {err}" if not str(err).startswith(where) else str(err)) from None
    except (struct.error, IndexError, ValueError, KeyError) as err:
        raise ElfError(f"{where}: malformed BPF object ({type(err).__name__}: {err})") from None


def open_file(path: str) -> ElfObject:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise PyBPFError(f"cannot read {path}: {err.strerror}") from None
    return parse_object(data, object_name(path), path)


class _Parser:
    def __init__(self, data: bytes, name: str, where: str) -> None:
        self.elf = ElfFile(data, where)
        self.name = name
        self.where = where
        self.maps: list[MapSpec] = []
        self.map_defs: dict[str, MapDef] = {}
        self.map_by_sym: dict[tuple[int, int], str] = {}  # (section, offset) -> map
        self.data_maps: dict[int, str] = {}  # data section index -> map
        self.externs: dict[str, Extern] = {}
        self.variables: dict[str, Variable] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> ElfObject:
        elf = self.elf
        self.license = self._string_section("license")
        version = elf.section("version")
        self.kern_version = struct.unpack("<I", version.data[:4])[0] if version else 0
        self.btf = self._btf()
        self.ext = BTFExt()
        ext_sec = elf.section(".BTF.ext")
        if ext_sec is not None and self.btf is not None:
            self.ext = parse_btf_ext(ext_sec.data, self.btf)
        self._maps()
        functions = self._functions()
        self.sec_slots = {s: self._slots(s) for s in {f.section.index for f in functions}}
        self.sec_maps: dict[int, dict[int, str]] = {s: {} for s in self.sec_slots}
        self.sec_calls: dict[int, dict[int, int]] = {s: {} for s in self.sec_slots}
        for sec_index in self.sec_slots:
            self._relocate(elf.sections[sec_index])
        text = elf.section(".text")
        self.funcs_by_start = {(f.section.index, f.start): f for f in functions}
        self.text_index = text.index if text is not None else -1
        programs = []
        autoload = {}
        for f in functions:
            if f.section.index == self.text_index:
                continue
            programs.append(self._program(f))
            autoload[f.name] = not f.section.name.startswith("?")
        spec = ObjectSpec(self.name, programs, self.maps, btf=self.btf.raw_bytes()
                          if self.btf is not None else None)  # fmt: skip
        ext = sorted(self.externs.values(), key=lambda e: (e.kind, -e.align, e.size, e.name))
        return ElfObject(self.name, spec, self.btf, self.variables, ext, self.kconfig_map,
                         self.license, self.kern_version, autoload)  # fmt: skip

    def _string_section(self, name: str) -> str:
        sec = self.elf.section(name)
        return sec.data.split(b"\0", 1)[0].decode(errors="replace") if sec is not None else ""

    # ------------------------------------------------------------------ BTF and externs
    def _btf(self) -> Optional[BTF]:
        sec = self.elf.section(".BTF")
        if sec is None:
            return None
        raw = BTF.from_bytes(sec.data)
        self._collect_externs(raw)
        syms = {s.name: s for s in self.elf.symbols
                if s.name and s.shndx != SHN_UNDEF and s.type != STT_SECTION}  # fmt: skip

        def section_size(name: str) -> Optional[int]:
            s = self.elf.section(name)
            return s.size if s is not None else None

        def symbol(name: str) -> Optional[tuple[int, bool]]:
            s = syms.get(name)
            return None if s is None else (s.value, s.visibility in (STV_HIDDEN, STV_INTERNAL))

        kconfig = {e.name: e.offset for e in self.externs.values() if e.kind == "kconfig"}
        size = max((e.offset + e.size for e in self.externs.values() if e.kind == "kconfig"),
                   default=0)  # fmt: skip
        return finalize_btf(raw, section_size, symbol, kconfig, size)

    def _collect_externs(self, btf: BTF) -> None:
        """libbpf's ``bpf_object__collect_externs``: undefined global symbols, typed by the
        VAR or FUNC of the same name in the ``.kconfig``/``.ksyms`` DATASEC."""
        in_sec: dict[str, tuple[str, int]] = {}
        for sec_name in (".kconfig", ".ksyms"):
            for sid in btf.find(sec_name, BTF_KIND_DATASEC):
                for vsi in btf.type(sid).secinfos:
                    in_sec[btf.type(vsi.type).name] = (sec_name, vsi.type)
        for sym in self.elf.symbols:
            if sym.shndx != SHN_UNDEF or not sym.name or sym.bind not in (STB_GLOBAL, STB_WEAK):
                continue
            where = in_sec.get(sym.name)
            if where is None:
                raise PyBPFError(f"extern {sym.name!r} is in neither .kconfig nor .ksyms")
            sec_name, tid = where
            t = btf.type(tid)
            e = Extern(sym.name, "kconfig" if sec_name == ".kconfig" else "ksym",
                       sym.bind == STB_WEAK, t.type if t.kind == BTF_KIND_VAR else tid)
            if e.kind == "kconfig":
                if t.kind == BTF_KIND_FUNC:
                    raise PyBPFError(f"extern function {sym.name} cannot be in .kconfig")
                e.size = btf.resolve_size(t.type)
                e.align = _align_of(btf, t.type)
            self.externs[sym.name] = e
        off = 0
        for e in sorted(self.externs.values(), key=lambda e: (-e.align, e.size, e.name)):
            if e.kind == "kconfig":
                e.offset = -(-off // e.align) * e.align
                off = e.offset + e.size

    # ------------------------------------------------------------------ maps
    def _maps(self) -> None:
        elf, btf = self.elf, self.btf
        # libbpf's order: BTF-defined (then legacy) maps, global data, .kconfig
        maps_sec = elf.section(".maps")
        if maps_sec is not None:
            if btf is None:
                raise PyBPFError(".maps needs BTF, and the object has no .BTF section")
            for d in btf_maps(btf):
                self._add_map(d, maps_sec.index)
            self._map_slots(maps_sec)
        legacy = elf.section("maps")
        if legacy is not None:
            for sym in elf.symbols:
                if sym.shndx == legacy.index and sym.name and sym.type != STT_SECTION:
                    self._add_map(legacy_map(sym.name, legacy.data, sym.value, sym.size),
                                  legacy.index)  # fmt: skip
        for sec in elf.sections:
            kind = _is_data(sec)
            if kind is None or sec.size == 0:
                continue
            self._data_map(sec, kind)
        kconfig = [e for e in self.externs.values() if e.kind == "kconfig"]
        self.kconfig_map: Optional[str] = None
        if kconfig:
            size = max(e.offset + e.size for e in kconfig)
            name = internal_map_name(self.name, ".kconfig")
            value_id = self._datasec_id(".kconfig")
            self.maps.append(MapSpec(name, BPF_MAP_TYPE_ARRAY, 4, size, 1,
                                     BPF_F_RDONLY_PROG | self._mmapable(value_id),
                                     btf_value_type_id=value_id, initial=bytes(size),
                                     freeze=True))  # fmt: skip
            self.kconfig_map = name

    def _add_map(self, d: MapDef, sec_index: int) -> None:
        inner = None
        if d.inner is not None:
            i = d.inner
            inner = MapSpec(f"{d.name}.inner", i.type, i.key_size,
                            i.value_size, i.max_entries, i.map_flags, map_extra=i.map_extra)
        self.maps.append(MapSpec(d.name, d.type, d.key_size, d.value_size, d.max_entries,
                                 d.map_flags, btf_key_type_id=d.key_type_id,
                                 btf_value_type_id=d.value_type_id, map_extra=d.map_extra,
                                 inner=inner, slots={} if d.has_values else None))
        self.map_defs[d.name] = d
        self.map_by_sym[(sec_index, d.section_offset)] = d.name

    def _map_slots(self, maps_sec: Section) -> None:
        """``.rel.maps``: the initial values of ``__array(values, ...)`` (libbpf's
        ``bpf_object__collect_map_relos``): slot i of a map of maps or a prog array."""
        rel = self.elf.relocation_sections().get(maps_sec.index)
        if rel is None:
            return
        by_name = {m.name: m for m in self.maps}
        for offset, _rtype, sym in self.elf.relocations(rel):
            owner = next((d for d in self.map_defs.values() if d.has_values and
                          d.section_offset <= offset < d.section_offset + d.section_size),
                         None)  # fmt: skip
            if owner is None:
                raise PyBPFError(f".maps+{offset}: a relocation outside any map's values")
            index, rem = divmod(offset - owner.section_offset - owner.values_offset, 8)
            if rem or index < 0:
                raise PyBPFError(f"map {owner.name}: misaligned value relocation")
            if owner.inner is not None:
                target = self.map_by_sym.get((sym.shndx, sym.value))
            else:
                sec = self.elf.sections[sym.shndx] if sym.shndx < len(self.elf.sections) else None
                target = sym.name if sym.type == STT_FUNC and sec is not None and \
                    sec.executable else None  # fmt: skip
            if target is None:
                raise PyBPFError(f"map {owner.name}: slot {index} refers to {sym.name!r}, "
                                 f"which is not a {'map' if owner.inner else 'program'}")
            if index >= owner.max_entries:
                raise PyBPFError(f"map {owner.name}: slot {index} beyond max_entries")
            slots = by_name[owner.name].slots
            assert slots is not None
            slots[index] = target

    def _datasec_id(self, name: str) -> int:
        if self.btf is None:
            return 0
        ids = self.btf.find(name, BTF_KIND_DATASEC)
        return ids[0] if ids else 0

    def _mmapable(self, datasec_id: int) -> int:
        """libbpf's ``map_is_mmapable``: a DATASEC with a non-static variable."""
        if not datasec_id or self.btf is None:
            return 0
        for vsi in self.btf.type(datasec_id).secinfos:
            var = self.btf.type(vsi.type)
            if var.kind == BTF_KIND_VAR and var.linkage != BTF_VAR_STATIC:
                return BPF_F_MMAPABLE
        return 0

    def _data_map(self, sec: Section, kind: str) -> None:
        name = internal_map_name(self.name, sec.name)
        value_id = self._datasec_id(sec.name)
        flags = (BPF_F_RDONLY_PROG if kind == "rodata" else 0) | self._mmapable(value_id)
        self.maps.append(MapSpec(name, BPF_MAP_TYPE_ARRAY, 4, sec.size, 1, flags,
                                 btf_value_type_id=value_id, initial=sec.data,
                                 freeze=kind == "rodata"))  # fmt: skip
        self.data_maps[sec.index] = name
        if value_id and self.btf is not None:
            for vsi in self.btf.type(value_id).secinfos:
                var = self.btf.type(vsi.type)
                if var.kind == BTF_KIND_VAR:
                    self.variables[var.name] = Variable(var.name, name, sec.name, vsi.offset,
                                                        vsi.size, var.type, kind == "rodata")

    # ------------------------------------------------------------------ programs
    def _functions(self) -> list[Function]:
        """Every function symbol of every executable section, in section then address order
        (libbpf's program order)."""
        out = []
        for sec in self.elf.sections:
            if not sec.executable or sec.size == 0:
                continue
            if sec.size % 8:
                raise PyBPFError(f"section {sec.name}: size {sec.size} is not a multiple of 8")
            syms = sorted((s for s in self.elf.symbols
                           if s.shndx == sec.index and s.type == STT_FUNC and s.name),
                          key=lambda s: s.value)  # fmt: skip
            if sec.name != ".text" and find_section_def(sec.name) is None:
                raise PyBPFError(f"program section {sec.name!r}: unknown to libbpf's table "
                                 "(tp_btf/, raw_tp/, tracepoint/, kprobe/, fentry/, xdp, ...)")
            for s in syms:
                if s.value % 8 or s.size % 8 or s.value + s.size > sec.size or s.size == 0:
                    raise PyBPFError(f"function {s.name}: bad offset/size in {sec.name}")
                if s.bind == STB_LOCAL and sec.name != ".text":
                    raise PyBPFError(f"program {s.name!r} in {sec.name} is static: "
                                     "not supported (as in libbpf)")  # fmt: skip
                out.append(Function(s.name, sec, s.value // 8, (s.value + s.size) // 8, s))
        return out

    def _slots(self, index: int) -> list[list[int]]:
        data = self.elf.sections[index].data
        return [list(_SLOT.unpack_from(data, i)) for i in range(0, len(data), 8)]

    def _relocate(self, sec: Section) -> None:
        """Apply the ELF relocations of a code section: maps, global data, externs; calls
        and function addresses are remembered for linking."""
        rel = self.elf.relocation_sections().get(sec.index)
        if rel is None:
            return
        slots = self.sec_slots[sec.index]
        for offset, _rtype, sym in self.elf.relocations(rel):
            if offset % 8 or offset // 8 >= len(slots):
                raise PyBPFError(f"{sec.name}: relocation at {offset} is outside the code")
            i = offset // 8
            insn = slots[i]
            what = f"{sec.name}+{offset}: relocation against {sym.name or 'section'}"
            if insn[0] == _CALL:
                if sym.shndx == SHN_UNDEF:
                    raise PyBPFError(f"{what}: calls of kernel functions (kfuncs) are not "
                                     "supported yet")  # fmt: skip
                if insn[1] >> 4 != isa.BPF_PSEUDO_CALL or sym.shndx != self._text_index():
                    raise PyBPFError(f"{what}: a call outside .text")
                self.sec_calls[sec.index][i] = sym.value // 8 + insn[3] + 1
                continue
            if insn[0] != _LD_IMM64 or i + 1 >= len(slots):
                raise PyBPFError(f"{what}: instruction {insn[0]:#x} is not a 64-bit load")
            if sym.shndx == SHN_UNDEF and sym.name:
                self._relocate_extern(sec, i, sym, what)
            elif sym.shndx == self._text_index() and sym.type in (STT_FUNC, STT_SECTION):
                # a callback's address (bpf_loop...): marked BPF_PSEUDO_FUNC, as libbpf does
                if (sym.value + insn[3]) % 8:
                    raise PyBPFError(f"{what}: function address not on an instruction")
                insn[1] = (insn[1] & 0x0F) | (isa.BPF_PSEUDO_FUNC << 4)
                self.sec_calls[sec.index][i] = (sym.value + insn[3]) // 8
            elif (sym.shndx, sym.value) in self.map_by_sym and sym.type != STT_SECTION:
                insn[1] = (insn[1] & 0x0F) | (isa.BPF_PSEUDO_MAP_FD << 4)
                insn[3] = 0
                self.sec_maps[sec.index][i] = self.map_by_sym[(sym.shndx, sym.value)]
            elif sym.shndx in self.data_maps:
                value_off = sym.value + insn[3] if sym.type != STT_SECTION else insn[3]
                insn[1] = (insn[1] & 0x0F) | (isa.BPF_PSEUDO_MAP_VALUE << 4)
                insn[3] = 0
                slots[i + 1][3] = value_off
                self.sec_maps[sec.index][i] = self.data_maps[sym.shndx]
            else:
                target = self.elf.sections[sym.shndx].name if sym.shndx < len(
                    self.elf.sections) else str(sym.shndx)
                raise PyBPFError(f"{what} in section {target!r}: not a map, global data "
                                 "or extern")  # fmt: skip

    def _text_index(self) -> int:
        text = self.elf.section(".text")
        return text.index if text is not None else -1

    def _relocate_extern(self, sec: Section, i: int, sym: Symbol, what: str) -> None:
        ext = self.externs.get(sym.name)
        if ext is None:
            raise PyBPFError(f"{what}: unknown extern")
        if ext.kind != "kconfig":
            raise PyBPFError(f"{what}: __ksym externs are not supported yet")
        slots = self.sec_slots[sec.index]
        slots[i][1] = (slots[i][1] & 0x0F) | (isa.BPF_PSEUDO_MAP_VALUE << 4)
        slots[i][3] = 0
        slots[i + 1][3] = ext.offset
        assert self.kconfig_map is not None
        self.sec_maps[sec.index][i] = self.kconfig_map

    # ------------------------------------------------------------------ linking
    def _program(self, main: Function) -> ProgramSpec:
        slots: list[list[int]] = []
        maps: dict[int, str] = {}
        placed: dict[int, int] = {}  # function start in .text -> slot in this program
        func_info: list[tuple[int, int]] = []
        line_info: list[tuple[int, int, int, int]] = []
        core: dict[int, CoreRelo] = {}

        def append(f: Function) -> int:
            base = len(slots)
            sec = f.section.index
            slots.extend([list(s) for s in self.sec_slots[sec][f.start : f.end]])
            for i, name in self.sec_maps[sec].items():
                if f.start <= i < f.end:
                    maps[base + i - f.start] = name
            lo, hi = f.start * 8, f.end * 8
            sname = f.section.name
            for off, tid in self.ext.func_info.get(sname, ()):
                if lo <= off < hi:
                    func_info.append((base + (off - lo) // 8, tid))
            for off, file_off, line_off, col in self.ext.line_info.get(sname, ()):
                if lo <= off < hi:
                    line_info.append((base + (off - lo) // 8, file_off, line_off, col))
            for off, tid, access, kind in self.ext.core_relos.get(sname, ()):
                if lo <= off < hi:
                    slot = base + (off - lo) // 8
                    core[slot] = CoreRelo(slot, tid, access, kind)
            return base

        def link(f: Function, base: int) -> None:
            """libbpf's ``bpf_object__reloc_code``: depth first, first call first."""
            sec = f.section.index
            calls = self.sec_calls[sec]
            for i in range(f.start, f.end):
                insn = slots[base + i - f.start]
                call = insn[0] == _CALL and insn[1] >> 4 == isa.BPF_PSEUDO_CALL
                func_ref = insn[0] == _LD_IMM64 and insn[1] >> 4 == isa.BPF_PSEUDO_FUNC
                if not (call or func_ref):
                    continue
                if i in calls:
                    target = calls[i]
                elif func_ref:
                    continue
                else:
                    if sec != self.text_index:
                        raise PyBPFError(f"{f.name}: call without relocation outside .text")
                    target = i + insn[3] + 1
                sub = self.funcs_by_start.get((self.text_index, target))
                if sub is None:
                    raise PyBPFError(f"{f.name}: call to .text+{target * 8}, which is no "
                                     "function start")  # fmt: skip
                if target not in placed:
                    placed[target] = append(sub)
                    link(sub, placed[target])
                slots[base + i - f.start][3] = placed[target] - (base + i - f.start) - 1

        link(main, append(main))
        insns = self._instructions(main, slots, maps)
        sdef = find_section_def(main.section.name)
        assert sdef is not None
        return ProgramSpec(
            main.name, main.section.name, insns, self.license or "",
            prog_type=sdef.prog_type, expected_attach_type=sdef.expected_attach_type,
            prog_flags=sdef.prog_flags, attach_btf=sdef.attach_btf,
            kern_version=self.kern_version, core_relos=core,
            func_info=b"".join(struct.pack("<II", *r) for r in func_info),
            line_info=b"".join(struct.pack("<IIII", *r) for r in line_info),
        )  # fmt: skip

    def _instructions(self, f: Function, slots: list[list[int]],
                      maps: dict[int, str]) -> list[isa.Instruction]:  # fmt: skip
        out = []
        i = 0
        while i < len(slots):
            op, regs, off, imm = slots[i]
            if op == _LD_IMM64:
                if i + 1 >= len(slots):
                    raise PyBPFError(f"{f.name}: LD_IMM64 at the end of the program")
                imm = (imm & 0xFFFFFFFF) | ((slots[i + 1][3] & 0xFFFFFFFF) << 32)
                out.append(isa.Instruction(op, regs & 0xF, regs >> 4, off, imm, map=maps.get(i)))
                i += 2
                continue
            out.append(isa.Instruction(op, regs & 0xF, regs >> 4, off, imm))
            i += 1
        return out


def _align_of(btf: BTF, type_id: int) -> int:
    """libbpf's ``btf__align_of`` for the types externs have (ints, enums, arrays, ptrs)."""
    from ..btf import BTF_KIND_ARRAY, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_INT, BTF_KIND_PTR

    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64):
        return min(8, max(1, t.size))
    if t.kind == BTF_KIND_PTR:
        return 8
    if t.kind == BTF_KIND_ARRAY:
        return _align_of(btf, t.elem_type)
    raise PyBPFError(f"extern of type {t.kind_name}: unsupported")


def kernel_version_code(release: str) -> int:
    """KERNEL_VERSION(a, b, c) of a release string such as ``6.18.44-fc``; c caps at 255."""
    parts = []
    for p in release.split(".")[:3]:
        digits = ""
        for ch in p:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if len(parts) != 3:
        return 0
    a, b, c = parts
    return (a << 16) + (b << 8) + min(c, 255)
