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
from typing import Any, Optional

from .ints import s32 as _s32
from .record import FrozenRecord

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

# BPF_END source bit: BPF_TO_LE (BPF_K) / BPF_TO_BE (BPF_X) in BPF_ALU; in BPF_ALU64 with
# BPF_K it is an unconditional byte swap ("bswap", cpu v4, Linux 6.6).
BPF_TO_LE = 0x00
BPF_TO_BE = 0x08
# ``off`` of BPF_DIV/BPF_MOD: signed division/modulo (cpu v4, Linux 6.6).
BPF_SIGNED_DIV_OFF = 1
# ``off`` of BPF_ALU64 | BPF_MOV | BPF_X: sign-extending moves (8/16/32, cpu v4, Linux 6.6)
# and, with off 1, an address-space cast for arena pointers (Linux 6.9).
BPF_ADDR_SPACE_CAST = 1

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
BPF_JCOND = 0xE0  # with src_reg BPF_MAY_GOTO: may_goto (Linux 6.9)
BPF_MAY_GOTO = 0

# Atomic operations: the immediate of BPF_STX | BPF_ATOMIC (Linux 5.12; 32-bit BPF_ADD 5.0).
BPF_FETCH = 0x01
BPF_XCHG = 0xE0 | BPF_FETCH
BPF_CMPXCHG = 0xF0 | BPF_FETCH
BPF_LOAD_ACQ = 0x100  # load-acquire (Linux 6.15)
BPF_STORE_REL = 0x110  # store-release (Linux 6.15)

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


class Instruction(FrozenRecord):
    """One eBPF instruction.

    ``label`` names a jump target (for ``BPF_JMP``/``BPF_JMP32`` jumps) that the
    assembler turns into ``off``.  ``helper`` is a helper name for ``BPF_CALL``
    (resolved to a number from the target's BTF ``enum bpf_func_id``).  ``map``
    names the map an ``LD_IMM64`` refers to; ``core`` is a CO-RE access whose
    value the relocation engine patches in.
    """

    _fields = ("opcode", "dst", "src", "off", "imm", "label", "helper", "map", "core",
               "comment", "raw")
    opcode: int
    dst: int
    src: int
    off: int
    imm: int
    label: Optional[str]
    helper: Optional[str]
    map: Optional[str]
    core: Any
    comment: Optional[str]
    #: 8 bytes that are no instruction (``.quad`` in assembly text); fields are ignored
    raw: Optional[bytes]

    def __init__(
        self, opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
        label: Optional[str] = None, helper: Optional[str] = None, map: Optional[str] = None,
        core: Any = None, comment: Optional[str] = None, raw: Optional[bytes] = None,
    ) -> None:  # fmt: skip
        # written out (not Record's generic __init__): hundreds are made per program
        _set = object.__setattr__
        _set(self, "opcode", opcode)
        _set(self, "dst", dst)
        _set(self, "src", src)
        _set(self, "off", off)
        _set(self, "imm", imm)
        _set(self, "label", label)
        _set(self, "helper", helper)
        _set(self, "map", map)
        _set(self, "core", core)
        _set(self, "comment", comment)
        _set(self, "raw", raw)

    @property
    def is_ld_imm64(self) -> bool:
        return self.opcode == LD_IMM64 and self.raw is None

    @property
    def slots(self) -> int:
        """Number of 8-byte slots: 2 for LD_IMM64, 1 otherwise."""
        return 2 if self.opcode == LD_IMM64 and self.raw is None else 1

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def mem_size(self) -> int:
        """Bytes moved by a load or store instruction."""
        return SIZE_BYTES[self.opcode & 0x18]

    def with_(self, **changes: Any) -> Instruction:
        return self._replace(**changes)

    def encode(self) -> bytes:
        """Little-endian bytes of this instruction (8, or 16 for LD_IMM64)."""
        if self.raw is not None:
            return self.raw
        regs = (self.src & 0xF) << 4 | (self.dst & 0xF)
        if self.opcode == LD_IMM64:
            imm = self.imm & 0xFFFFFFFFFFFFFFFF
            lo = imm & 0xFFFFFFFF
            hi = imm >> 32
            return _SLOT.pack(self.opcode, regs, self.off, _s32(lo)) + _SLOT.pack(
                0, 0, 0, _s32(hi)
            )
        return _SLOT.pack(self.opcode, regs, self.off, _s32(self.imm & 0xFFFFFFFF))


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


# ---------------------------------------------------------------------------
# Which encodings are instructions (RFC 9669 plus the kernel's later additions)

MAX_REG = 10
ALU_OPS = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH,
           BPF_NEG, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END)  # fmt: skip
JMP_CONDS = (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE,
             BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE)  # fmt: skip
ATOMIC_OPS = (BPF_ADD, BPF_OR, BPF_AND, BPF_XOR, BPF_ADD | BPF_FETCH, BPF_OR | BPF_FETCH,
              BPF_AND | BPF_FETCH, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG)  # fmt: skip
LD_IMM64_SOURCES = range(0, BPF_PSEUDO_MAP_IDX_VALUE + 1)


def check(insn: Instruction) -> Optional[str]:
    """Why ``insn`` is not an eBPF instruction, or None if it is one.

    Reserved fields must be zero (the verifier rejects them: "uses reserved
    fields"), registers are r0..r10, and only the opcodes, ``off`` variants
    and atomic immediates of the ISA exist.  This is the set the disassembler
    prints as instructions; anything else it prints as raw data."""
    code, dst, src, off, imm = insn.opcode, insn.dst, insn.src, insn.off, insn.imm
    cls = code & 0x07
    if insn.raw is not None:
        return "raw data"
    if not 0 <= code <= 0xFF:
        return "opcode is not a byte"
    if dst > MAX_REG or (src > MAX_REG and code != LD_IMM64):
        return "register beyond r10"
    if code == LD_IMM64:
        if src not in LD_IMM64_SOURCES or off:
            return "LD_IMM64 with unknown source or nonzero offset"
        if src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX) and imm >> 32:
            return "map reference with a second immediate"
        return None
    if not -(1 << 31) <= imm < (1 << 31) and not (0 <= imm < (1 << 32)):
        return "immediate beyond 32 bits"
    if cls in (BPF_ALU, BPF_ALU64):
        op, x = code & 0xF0, code & BPF_X
        if op not in ALU_OPS:
            return "unknown ALU operation"
        if op == BPF_NEG:
            return None if not (x or src or off or imm) else "neg uses reserved fields"
        if op == BPF_END:
            if (cls == BPF_ALU64 and x) or src or off or imm not in (16, 32, 64):
                return "bad byte swap"
            return None
        if x:
            if imm and not (op == BPF_MOV and cls == BPF_ALU64 and off == BPF_ADDR_SPACE_CAST):
                return "register operation with an immediate"
        elif src:
            return "immediate operation with a source register"
        if op in (BPF_DIV, BPF_MOD):
            return None if off in (0, BPF_SIGNED_DIV_OFF) else "bad division offset"
        if op == BPF_MOV and x:
            allowed = (0, 8, 16, 32, BPF_ADDR_SPACE_CAST) if cls == BPF_ALU64 else (0, 8, 16)
            return None if off in allowed else "bad mov offset"
        return None if off == 0 else "ALU operation with an offset"
    if cls in (BPF_JMP, BPF_JMP32):
        op, x = code & 0xF0, code & BPF_X
        if op == BPF_JA:
            if x or src or dst:
                return "ja uses reserved fields"
            if cls == BPF_JMP:
                return None if imm == 0 else "goto with an immediate (gotol is JMP32)"
            return None if off == 0 else "gotol with an offset"
        if op in JMP_CONDS:
            if x:
                return None if imm == 0 else "register jump with an immediate"
            return None if src == 0 else "immediate jump with a source register"
        if cls == BPF_JMP32:
            return "call, exit and may_goto exist only in BPF_JMP"
        if op == BPF_CALL:
            if x:  # callx: target address in dst (LLVM's encoding)
                return None if not (src or off or imm) else "callx uses reserved fields"
            if dst:
                return "call with a destination register"
            if src == BPF_PSEUDO_KFUNC_CALL:
                return None
            return None if src in (0, BPF_PSEUDO_CALL) and off == 0 else "bad call"
        if op == BPF_EXIT:
            return None if not (x or dst or src or off or imm) else "exit uses reserved fields"
        if op == BPF_JCOND:
            if x or dst or src != BPF_MAY_GOTO or imm:
                return "may_goto uses reserved fields"
            return None
        return "unknown jump operation"
    mode, size = code & 0xE0, code & 0x18
    if cls == BPF_LD:
        if mode not in (BPF_ABS, BPF_IND) or size == BPF_DW:
            return "unknown BPF_LD mode"
        if dst or off or (mode == BPF_ABS and src):
            return "legacy packet load uses reserved fields"
        return None
    if cls == BPF_LDX:
        if mode == BPF_MEMSX and size == BPF_DW:
            return "no sign-extending 8-byte load"
        if mode not in (BPF_MEM, BPF_MEMSX):
            return "unknown BPF_LDX mode"
        return None if imm == 0 else "load with an immediate"
    if cls == BPF_ST:
        if mode != BPF_MEM:
            return "unknown BPF_ST mode"
        return None if src == 0 else "store of an immediate with a source register"
    # BPF_STX
    if mode == BPF_MEM:
        return None if imm == 0 else "store with an immediate"
    if mode == BPF_ATOMIC:
        if imm in (BPF_LOAD_ACQ, BPF_STORE_REL):
            return None
        if size not in (BPF_W, BPF_DW):
            return "atomic read-modify-write of 1 or 2 bytes"
        return None if imm in ATOMIC_OPS else "unknown atomic operation"
    return "unknown BPF_STX mode"


# Instruction families later than the base ISA, by the Linux version whose verifier accepts
# them (feature probes ask the running kernel: pybpf.probes.have_insn).
ISA_FEATURES = {
    "jmp32": "5.1",  # BPF_JMP32 conditional jumps (cpu v3)
    "atomics": "5.12",  # fetch, and/or/xor, xchg, cmpxchg (only plain add before)
    "kfunc_call": "5.13",  # call with src_reg BPF_PSEUDO_KFUNC_CALL
    "ld_imm64_func": "5.13",  # LD_IMM64 of a subprogram (BPF_PSEUDO_FUNC)
    "ld_imm64_idx": "5.14",  # LD_IMM64 of a map by fd_array index
    "v4": "6.6",  # sdiv/smod, movsx, bswap, sign-extending loads, gotol (cpu v4)
    "may_goto": "6.9",
    "addr_space_cast": "6.9",
    "load_acquire": "6.15",  # load-acquire, store-release
}


def required_feature(insn: Instruction) -> Optional[str]:
    """The :data:`ISA_FEATURES` family ``insn`` belongs to, None for the base ISA (what
    every kernel with BTF, 5.x, accepts).  Assumes :func:`check` accepts ``insn``."""
    code, cls, op = insn.opcode, insn.opcode & 0x07, insn.opcode & 0xF0
    if code == LD_IMM64:
        if insn.src == BPF_PSEUDO_FUNC:
            return "ld_imm64_func"
        by_index = insn.src in (BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE)
        return "ld_imm64_idx" if by_index else None
    if cls in (BPF_ALU, BPF_ALU64):
        if op in (BPF_DIV, BPF_MOD) and insn.off:
            return "v4"
        if op == BPF_MOV and code & BPF_X and insn.off:
            return "addr_space_cast" if insn.off == BPF_ADDR_SPACE_CAST else "v4"
        return "v4" if op == BPF_END and cls == BPF_ALU64 else None
    if cls == BPF_JMP32:
        return "v4" if op == BPF_JA else "jmp32"
    if cls == BPF_JMP:
        if op == BPF_JCOND:
            return "may_goto"
        return "kfunc_call" if op == BPF_CALL and insn.src == BPF_PSEUDO_KFUNC_CALL else None
    if cls == BPF_LDX and code & 0xE0 == BPF_MEMSX:
        return "v4"
    if cls == BPF_STX and code & 0xE0 == BPF_ATOMIC:
        if insn.imm in (BPF_LOAD_ACQ, BPF_STORE_REL):
            return "load_acquire"
        return None if insn.imm == BPF_ADD else "atomics"
    return None


def raw(data: bytes) -> Instruction:
    """An 8-byte slot kept as data (``.quad``), e.g. half of a broken LD_IMM64."""
    if len(data) != 8:
        raise ValueError("raw slots are 8 bytes")
    opcode, regs, off, imm = _SLOT.unpack(data)
    return Instruction(opcode, regs & 0xF, regs >> 4, off, imm, raw=bytes(data))


def decode_all(data: bytes) -> list[Instruction]:
    """Like :func:`decode`, but lossless for any bytes: an LD_IMM64 whose second
    slot is not a plain continuation (code, registers and offset zero), or that
    ends the program, becomes a :func:`raw` slot and decoding goes on."""
    if len(data) % 8:
        raise ValueError(f"program length {len(data)} is not a multiple of 8 bytes")
    out: list[Instruction] = []
    pos, n = 0, len(data)
    unpack = _SLOT.unpack_from
    while pos < n:
        opcode, regs, off, imm = unpack(data, pos)
        if opcode == LD_IMM64:
            if pos + 8 < n and data[pos + 8 : pos + 12] == b"\0\0\0\0":
                hi = unpack(data, pos + 8)[3]
                imm = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
                out.append(Instruction(opcode, regs & 0xF, regs >> 4, off, imm))
                pos += 16
                continue
            out.append(raw(data[pos : pos + 8]))
        else:
            out.append(Instruction(opcode, regs & 0xF, regs >> 4, off, imm))
        pos += 8
    return out


def subprog_starts(insns: list[Instruction]) -> list[int]:
    """Slot offsets where the kernel sees a subprogram begin: 0, and the target of every
    bpf-to-bpf call (BPF_PSEUDO_CALL) and function reference (BPF_PSEUDO_FUNC) of an
    assembled program.  Program BTF needs one FUNC per start, in this order, in
    ``func_info`` (else "number of funcs in func_info doesn't match number of subprogs")."""
    starts = {0}
    slot = 0
    for insn in insns:
        pseudo_call = insn.opcode == BPF_JMP | BPF_CALL and insn.src == BPF_PSEUDO_CALL
        pseudo_func = insn.opcode == LD_IMM64 and insn.src == BPF_PSEUDO_FUNC and insn.raw is None
        if pseudo_call or pseudo_func:
            starts.add(slot + 1 + _s32(insn.imm & 0xFFFFFFFF))
        slot += insn.slots
    return sorted(starts)
