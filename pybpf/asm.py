"""The assembler DSL: Python code that *generates* eBPF instructions.

Each method appends one instruction; jumps name labels; helpers are called by
name (their numbers come from the target kernel's BTF at load time); maps are
referenced by name (their fds are patched in by the loader); memory accesses
to kernel structs name the C type and member (the CO-RE engine computes the
offset against the target kernel)::

    a = Asm()
    a.ldx(R6, R1, 8, size=8)                  # r6 = ctx[1]
    a.ldx_core(R7, R6, task_struct.pid)        # r7 = prev->pid
    a.jeq(R7, 0, "out")                        # if (!pid) goto out
    a.label("out")
    a.mov(R0, 0)
    a.exit()

The result of :meth:`Asm.assemble` is a list of :class:`~pybpf.isa.Instruction`
with jump offsets resolved and every symbolic operand still attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from . import isa
from .cdecl import CType, FieldRef
from .errors import AsmError

# libbpf's enum bpf_core_relo_kind (include/uapi/linux/bpf.h).
BPF_CORE_FIELD_BYTE_OFFSET = 0
BPF_CORE_FIELD_BYTE_SIZE = 1
BPF_CORE_FIELD_EXISTS = 2
BPF_CORE_FIELD_SIGNED = 3
BPF_CORE_FIELD_LSHIFT_U64 = 4
BPF_CORE_FIELD_RSHIFT_U64 = 5
BPF_CORE_TYPE_ID_LOCAL = 6
BPF_CORE_TYPE_ID_TARGET = 7
BPF_CORE_TYPE_EXISTS = 8
BPF_CORE_TYPE_SIZE = 9
BPF_CORE_ENUMVAL_EXISTS = 10
BPF_CORE_ENUMVAL_VALUE = 11
BPF_CORE_TYPE_MATCHES = 12


class Reg:
    """A BPF register; ``R10`` is the read-only frame pointer."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"r{self.index}"


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = (Reg(i) for i in range(11))
FP = R10

Operand = Union[Reg, int]


@dataclass(frozen=True)
class CoreAccess:
    """What a CO-RE relocation refers to: a field, a type, or an enumerator.

    ``root`` is the local root type (its name, flavor included, is what
    candidates are searched by); ``access`` is libbpf's access string.
    """

    kind: int
    root: CType
    access: str
    field: str = ""

    @classmethod
    def of_field(cls, kind: int, ref: FieldRef) -> CoreAccess:
        return cls(kind, ref.root, ref.access, ref.dotted)


_JUMP_OPS = {
    "jeq": isa.BPF_JEQ, "jne": isa.BPF_JNE, "jgt": isa.BPF_JGT, "jge": isa.BPF_JGE,
    "jlt": isa.BPF_JLT, "jle": isa.BPF_JLE, "jsgt": isa.BPF_JSGT, "jsge": isa.BPF_JSGE,
    "jslt": isa.BPF_JSLT, "jsle": isa.BPF_JSLE, "jset": isa.BPF_JSET,
}  # fmt: skip


def _check_imm32(value: int, what: str) -> int:
    if not -(1 << 31) <= value < (1 << 32):
        raise AsmError(f"{what}: immediate {value} does not fit in 32 bits (use ld_imm64)")
    return value


class Asm:
    """Builds one BPF program (or subprogram) instruction by instruction."""

    def __init__(self) -> None:
        self.insns: list[isa.Instruction] = []
        self.labels: dict[str, int] = {}  # label -> index into self.insns

    # -- plumbing -------------------------------------------------------
    def emit(self, insn: isa.Instruction) -> Asm:
        self.insns.append(insn)
        return self

    def label(self, name: str) -> Asm:
        if name in self.labels:
            raise AsmError(f"label {name!r} defined twice")
        self.labels[name] = len(self.insns)
        return self

    def _alu(self, op: int, cls: int, dst: Reg, src: Operand) -> Asm:
        if isinstance(src, Reg):
            return self.emit(isa.Instruction(cls | op | isa.BPF_X, dst.index, src.index))
        _check_imm32(src, f"alu {op:#x}")
        return self.emit(isa.Instruction(cls | op | isa.BPF_K, dst.index, 0, 0, src))

    # -- ALU, 64 and 32 bit ----------------------------------------------
    def mov(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MOV, isa.BPF_ALU64, dst, src)

    def mov32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MOV, isa.BPF_ALU, dst, src)

    def add(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_ADD, isa.BPF_ALU64, dst, src)

    def sub(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_SUB, isa.BPF_ALU64, dst, src)

    def mul(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MUL, isa.BPF_ALU64, dst, src)

    def div(self, dst: Reg, src: Operand) -> Asm:
        """Unsigned 64-bit division (division by zero yields 0 in BPF)."""
        return self._alu(isa.BPF_DIV, isa.BPF_ALU64, dst, src)

    def mod(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MOD, isa.BPF_ALU64, dst, src)

    def and_(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_AND, isa.BPF_ALU64, dst, src)

    def or_(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_OR, isa.BPF_ALU64, dst, src)

    def xor(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_XOR, isa.BPF_ALU64, dst, src)

    def lsh(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_LSH, isa.BPF_ALU64, dst, src)

    def rsh(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_RSH, isa.BPF_ALU64, dst, src)

    def arsh(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_ARSH, isa.BPF_ALU64, dst, src)

    def add32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_ADD, isa.BPF_ALU, dst, src)

    def sub32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_SUB, isa.BPF_ALU, dst, src)

    def and32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_AND, isa.BPF_ALU, dst, src)

    def neg(self, dst: Reg) -> Asm:
        return self.emit(isa.Instruction(isa.BPF_ALU64 | isa.BPF_NEG, dst.index))

    def ld_imm64(self, dst: Reg, value: int) -> Asm:
        if not -(1 << 63) <= value < (1 << 64):
            raise AsmError(f"ld_imm64: {value} does not fit in 64 bits")
        return self.emit(isa.Instruction(isa.LD_IMM64, dst.index, 0, 0, value))

    # -- memory ----------------------------------------------------------
    def ldx(self, dst: Reg, src: Reg, off: int, *, size: int) -> Asm:
        """``dst = *(u<size*8> *)(src + off)``."""
        code = isa.BPF_LDX | isa.BPF_MEM | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, dst.index, src.index, self._off(off)))

    def stx(self, dst: Reg, off: int, src: Reg, *, size: int) -> Asm:
        """``*(u<size*8> *)(dst + off) = src``."""
        code = isa.BPF_STX | isa.BPF_MEM | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, dst.index, src.index, self._off(off)))

    def st(self, dst: Reg, off: int, imm: int, *, size: int) -> Asm:
        """``*(u<size*8> *)(dst + off) = imm``."""
        code = isa.BPF_ST | isa.BPF_MEM | isa.size_from_bytes(size)
        _check_imm32(imm, "st")
        return self.emit(isa.Instruction(code, dst.index, 0, self._off(off), imm))

    @staticmethod
    def _off(off: int) -> int:
        if not -(1 << 15) <= off < (1 << 15):
            raise AsmError(f"memory offset {off} does not fit in 16 bits")
        return off

    # -- jumps -----------------------------------------------------------
    def _jump(self, op: int, cls: int, dst: Reg, src: Operand, target: str) -> Asm:
        if isinstance(src, Reg):
            insn = isa.Instruction(cls | op | isa.BPF_X, dst.index, src.index, label=target)
        else:
            _check_imm32(src, "jump")
            insn = isa.Instruction(cls | op | isa.BPF_K, dst.index, 0, 0, src, label=target)
        return self.emit(insn)

    def ja(self, target: str) -> Asm:
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_JA, label=target))

    def __getattr__(self, name: str):  # jeq, jne, ..., and jeq32, jne32, ...
        base, is32 = (name[:-2], True) if name.endswith("32") else (name, False)
        op = _JUMP_OPS.get(base)
        if op is None:
            raise AttributeError(name)
        cls = isa.BPF_JMP32 if is32 else isa.BPF_JMP

        def jump(dst: Reg, src: Operand, target: str) -> Asm:
            return self._jump(op, cls, dst, src, target)

        jump.__name__ = name
        return jump

    # -- calls -----------------------------------------------------------
    def call(self, helper: str) -> Asm:
        """Call a helper by name (``"ktime_get_ns"``); its number is read from
        the target kernel's ``enum bpf_func_id`` at load time."""
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_CALL, helper=helper))

    def exit(self) -> Asm:
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_EXIT))

    # -- maps ------------------------------------------------------------
    def ld_map_fd(self, dst: Reg, map_name: str) -> Asm:
        """``dst = &map`` (BPF_PSEUDO_MAP_FD; the loader patches in the fd)."""
        return self.emit(
            isa.Instruction(isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_MAP_FD, map=map_name)
        )

    def ld_map_value(self, dst: Reg, map_name: str, offset: int = 0) -> Asm:
        """``dst = &map_value[0] + offset`` (BPF_PSEUDO_MAP_VALUE, Linux 5.2).

        Loads through this pointer from a frozen BPF_F_RDONLY_PROG map are
        constants to the verifier, which then prunes branches they decide."""
        return self.emit(
            isa.Instruction(
                isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_MAP_VALUE, imm=offset << 32, map=map_name
            )
        )

    # -- CO-RE -----------------------------------------------------------
    def ldx_core(self, dst: Reg, src: Reg, field: FieldRef) -> Asm:
        """``dst = src->field``: offset and width relocated to the target kernel."""
        size = field.size
        if size not in isa.BYTES_SIZE:
            raise AsmError(f"{field.root.name}.{field.dotted}: {size}-byte field cannot be loaded")
        code = isa.BPF_LDX | isa.BPF_MEM | isa.size_from_bytes(size)
        core = CoreAccess.of_field(BPF_CORE_FIELD_BYTE_OFFSET, field)
        return self.emit(isa.Instruction(code, dst.index, src.index, field.offset, core=core))

    def add_offsetof(self, dst: Reg, field: FieldRef) -> Asm:
        """``dst += offsetof(root, field)`` (for taking a member's address)."""
        core = CoreAccess.of_field(BPF_CORE_FIELD_BYTE_OFFSET, field)
        code = isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K
        return self.emit(isa.Instruction(code, dst.index, 0, 0, field.offset, core=core))

    def field_exists(self, dst: Reg, field: FieldRef) -> Asm:
        """``dst = bpf_core_field_exists(field)``: 1 or 0 on the target kernel."""
        core = CoreAccess.of_field(BPF_CORE_FIELD_EXISTS, field)
        code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
        return self.emit(isa.Instruction(code, dst.index, 0, 0, 1, core=core))

    def field_size(self, dst: Reg, field: FieldRef) -> Asm:
        """``dst = bpf_core_field_size(field)`` on the target kernel."""
        core = CoreAccess.of_field(BPF_CORE_FIELD_BYTE_SIZE, field)
        code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
        return self.emit(isa.Instruction(code, dst.index, 0, 0, field.size, core=core))

    # -- result ----------------------------------------------------------
    def assemble(self) -> list[isa.Instruction]:
        """Resolve labels into jump offsets (in 8-byte slots, range-checked)."""
        slot_of: list[int] = []
        slot = 0
        for insn in self.insns:
            slot_of.append(slot)
            slot += insn.slots
        slot_of.append(slot)
        out: list[isa.Instruction] = []
        for index, insn in enumerate(self.insns):
            if insn.label is not None:
                if insn.label not in self.labels:
                    raise AsmError(f"jump to undefined label {insn.label!r}")
                delta = slot_of[self.labels[insn.label]] - slot_of[index] - 1
                if not -(1 << 15) <= delta < (1 << 15):
                    raise AsmError(f"jump to {insn.label!r} spans {delta} slots: beyond 16 bits")
                insn = insn.with_(off=delta)
            out.append(insn)
        if not out or out[-1].opcode not in (isa.BPF_JMP | isa.BPF_EXIT, isa.BPF_JMP | isa.BPF_JA):
            raise AsmError("program does not end with exit or an unconditional jump")
        return out

