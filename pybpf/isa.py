"""The eBPF instruction set: opcode constants and the 8-byte instruction encoding.

Constants keep the names of ``include/uapi/linux/bpf.h`` and ``bpf_common.h``
so they can be searched.  An :class:`Instruction` is one logical instruction;
``LD_IMM64`` (``BPF_LD | BPF_IMM | BPF_DW``) is one :class:`Instruction`
holding a 64-bit immediate that encodes to two 8-byte slots, as in
cilium/ebpf's ``asm`` package.  Symbolic operands (jump labels, helper names,
map names, CO-RE accesses) live beside the numeric fields until the loader
resolves them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any, Optional

# Instruction classes (low 3 bits of the opcode).
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# Load/store sizes.
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18

# Load/store modes.
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_MEMSX = 0x80  # sign-extending loads, cpu v4 (Linux 6.6)
BPF_ATOMIC = 0xC0

# Operand source.
BPF_K = 0x00
BPF_X = 0x08

# ALU operations.
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
BPF_MOV = 0xB0
BPF_ARSH = 0xC0
BPF_END = 0xD0

# Jump operations.
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xA0
BPF_JLE = 0xB0
BPF_JSLT = 0xC0
BPF_JSLE = 0xD0

# src_reg values of LD_IMM64 that make the immediate a reference.
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_MAP_IDX = 5
BPF_PSEUDO_MAP_IDX_VALUE = 6

# src_reg values of BPF_CALL.
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_KFUNC_CALL = 2

LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW

SIZE_BYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
BYTES_SIZE = {v: k for k, v in SIZE_BYTES.items()}

_SLOT = struct.Struct("<BBhi")


def size_from_bytes(nbytes: int) -> int:
    """The BPF_B/H/W/DW size code of an access of ``nbytes`` bytes."""
    try:
        return BYTES_SIZE[nbytes]
    except KeyError:
        raise ValueError(f"no BPF load/store of {nbytes} bytes (1, 2, 4 or 8)") from None


def opcode_class(opcode: int) -> int:
    return opcode & 0x07


@dataclass(frozen=True)
class Instruction:
    """One eBPF instruction.

    ``label`` names a jump target (for ``BPF_JMP``/``BPF_JMP32`` jumps) that the
    assembler turns into ``off``.  ``helper`` is a helper name for ``BPF_CALL``
    (resolved to a number from the target's BTF ``enum bpf_func_id``).  ``map``
    names the map an ``LD_IMM64`` refers to; ``core`` is a CO-RE access whose
    value the relocation engine patches in.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    label: Optional[str] = None
    helper: Optional[str] = None
    map: Optional[str] = None
    core: Any = None
    comment: Optional[str] = None

    @property
    def is_ld_imm64(self) -> bool:
        return self.opcode == LD_IMM64

    @property
    def slots(self) -> int:
        """Number of 8-byte slots: 2 for LD_IMM64, 1 otherwise."""
        return 2 if self.opcode == LD_IMM64 else 1

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def mem_size(self) -> int:
        """Bytes moved by a load or store instruction."""
        return SIZE_BYTES[self.opcode & 0x18]

    def with_(self, **changes: Any) -> Instruction:
        return replace(self, **changes)

    def encode(self) -> bytes:
        """Little-endian bytes of this instruction (8, or 16 for LD_IMM64)."""
        regs = (self.src & 0xF) << 4 | (self.dst & 0xF)
        if self.opcode == LD_IMM64:
            imm = self.imm & 0xFFFFFFFFFFFFFFFF
            lo = imm & 0xFFFFFFFF
            hi = imm >> 32
            return _SLOT.pack(self.opcode, regs, self.off, _s32(lo)) + _SLOT.pack(
                0, 0, 0, _s32(hi)
            )
        return _SLOT.pack(self.opcode, regs, self.off, _s32(self.imm & 0xFFFFFFFF))


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def encode(insns: list[Instruction]) -> bytes:
    """The raw program bytes the kernel's BPF_PROG_LOAD takes."""
    return b"".join(insn.encode() for insn in insns)


def decode(data: bytes) -> list[Instruction]:
    """Split raw bytes into instructions (LD_IMM64 re-joined into one)."""
    if len(data) % 8:
        raise ValueError(f"program length {len(data)} is not a multiple of 8 bytes")
    insns: list[Instruction] = []
    pos = 0
    while pos < len(data):
        opcode, regs, off, imm = _SLOT.unpack_from(data, pos)
        pos += 8
        if opcode == LD_IMM64:
            if pos >= len(data):
                raise ValueError("LD_IMM64 at the end of the program lacks its second slot")
            hi = _SLOT.unpack_from(data, pos)[3]
            pos += 8
            imm = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
        insns.append(Instruction(opcode, regs & 0xF, regs >> 4, off, imm))
    return insns
