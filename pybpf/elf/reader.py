"""A small reader of 64-bit little-endian ELF relocatable files (clang's ``.bpf.o``).

Only what a BPF object needs: section headers and their names, the symbol table and
``SHT_REL`` relocations.  Every offset and size is checked against the file, so a
truncated or corrupted file gives one :class:`ElfError`, never an IndexError.  It is
~20x faster than pyelftools on these files (``bench/elf_load.py``) and needs nothing.
"""

from __future__ import annotations

import struct
from typing import Optional

from ..errors import PyBPFError

EM_BPF = 247
ET_REL = 1
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOBITS = 8
SHT_REL = 9
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN = 0, 1, 2
R_BPF_64_64 = 1  # LD_IMM64 of a map or data symbol
R_BPF_64_ABS64 = 2  # 64-bit data (.maps of map-in-map, .BTF)
R_BPF_64_ABS32 = 3  # 32-bit data (.BTF, .BTF.ext)
R_BPF_64_32 = 10  # call instruction

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")


class ElfError(PyBPFError):
    """The file is not a BPF ELF object, or a damaged one."""


class Section:
    __slots__ = ("index", "name", "type", "flags", "offset", "size", "link", "info", "entsize",
                 "_elf")

    def __init__(self, elf: ElfFile, index: int, fields: tuple[int, ...]) -> None:
        (self.name, self.type, self.flags, _addr, self.offset, self.size, self.link,
         self.info, _align, self.entsize) = fields  # fmt: skip
        self.index = index
        self._elf = elf

    @property
    def data(self) -> bytes:
        """The section's bytes (zeros of its size for SHT_NOBITS, such as .bss)."""
        if self.type == SHT_NOBITS:
            return bytes(self.size)
        return self._elf.data[self.offset : self.offset + self.size]

    @property
    def executable(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)

    def __repr__(self) -> str:
        return f"<Section {self.index} {self.name!r} type={self.type} size={self.size}>"


class Symbol:
    __slots__ = ("index", "name", "bind", "type", "visibility", "shndx", "value", "size")

    def __init__(self, index: int, name: str, info: int, other: int, shndx: int, value: int,
                 size: int) -> None:  # fmt: skip
        self.index, self.name, self.shndx, self.value, self.size = index, name, shndx, value, size
        self.bind, self.type, self.visibility = info >> 4, info & 0xF, other & 0x3

    def __repr__(self) -> str:
        return f"<Symbol {self.name!r} sec={self.shndx} value={self.value} type={self.type}>"


class ElfFile:
    """A parsed BPF ELF object: ``sections`` (by index), ``symbols``, ``relocations``."""

    def __init__(self, data: bytes, where: str = "ELF file") -> None:
        self.data = data
        self.where = where
        if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
            raise ElfError(f"{where}: not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ElfError(f"{where}: not a 64-bit little-endian ELF file "
                           "(big-endian BPF objects are not supported)")
        (_ident, e_type, machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize,
         _phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)  # fmt: skip
        if machine != EM_BPF:
            raise ElfError(f"{where}: ELF machine {machine} is not BPF ({EM_BPF})")
        if e_type != ET_REL:
            raise ElfError(f"{where}: ELF type {e_type} is not a relocatable object (1)")
        if shentsize != _SHDR.size or shnum == 0 or shoff + shnum * shentsize > len(data):
            raise ElfError(f"{where}: section header table out of bounds: truncated?")
        if shstrndx >= shnum:
            raise ElfError(f"{where}: bad section name table index {shstrndx}")
        self.sections: list[Section] = [
            Section(self, i, _SHDR.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)
        ]
        for s in self.sections:
            if s.type != SHT_NOBITS and s.offset + s.size > len(data):
                raise ElfError(f"{where}: section {s.index} lies outside the file: truncated?")
        names = self.sections[shstrndx].data
        for s in self.sections:
            s.name = self._string(names, s.name, "section name")  # type: ignore[assignment]
        self._by_name = {s.name: s for s in self.sections}
        self.symbols: list[Symbol] = []
        symtabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if len(symtabs) != 1:
            raise ElfError(f"{where}: {len(symtabs)} symbol tables (a BPF object has one)")
        self.symtab = symtabs[0]
        self._read_symbols(self.symtab)

    def _string(self, table: bytes, offset: int, what: str) -> str:
        end = table.find(b"\0", offset)
        if offset >= len(table) or end < 0:
            raise ElfError(f"{self.where}: {what} offset {offset} out of its string table")
        try:
            return table[offset:end].decode()
        except UnicodeDecodeError:
            raise ElfError(f"{self.where}: {what} is not UTF-8") from None

    def _read_symbols(self, symtab: Section) -> None:
        if symtab.link >= len(self.sections) or symtab.size % _SYM.size:
            raise ElfError(f"{self.where}: malformed symbol table")
        strtab = self.sections[symtab.link].data
        data = symtab.data
        for i in range(symtab.size // _SYM.size):
            name, info, other, shndx, value, size = _SYM.unpack_from(data, i * _SYM.size)
            if shndx >= len(self.sections) and shndx not in (SHN_ABS, SHN_COMMON):
                raise ElfError(f"{self.where}: symbol {i} in section {shndx}, which is absent")
            self.symbols.append(
                Symbol(i, self._string(strtab, name, "symbol name"), info, other, shndx, value,
                       size)  # fmt: skip
            )

    def section(self, name: str) -> Optional[Section]:
        return self._by_name.get(name)

    def relocations(self, rel: Section) -> list[tuple[int, int, Symbol]]:
        """``(offset, type, symbol)`` of each entry of an SHT_REL section."""
        if rel.size % _REL.size:
            raise ElfError(f"{self.where}: relocation section {rel.name} has a partial entry")
        out = []
        data = rel.data
        for i in range(rel.size // _REL.size):
            offset, info = _REL.unpack_from(data, i * _REL.size)
            sym = info >> 32
            if sym >= len(self.symbols):
                raise ElfError(f"{self.where}: {rel.name}: relocation to symbol {sym}, "
                               f"which is absent")
            out.append((offset, info & 0xFFFFFFFF, self.symbols[sym]))
        return out

    def relocation_sections(self) -> dict[int, Section]:
        """SHT_REL sections by the index of the section they apply to (sh_info)."""
        out = {}
        for s in self.sections:
            if s.type == SHT_REL:
                if s.info >= len(self.sections):
                    raise ElfError(f"{self.where}: {s.name} applies to absent section {s.info}")
                out[s.info] = s
        return out
