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

The whole ISA is here: ALU and ALU32 (``sdiv``/``smod``, ``movsx``, ``neg``,
``le``/``be``/``bswap``), every jump and ``jeq32``..., ``gotol``, ``may_goto``,
sign-extending loads, atomics (``atomic_add(..., fetch=True)``, ``atomic_xchg``,
``atomic_cmpxchg``, ``load_acquire``/``store_release``), legacy packet loads,
subprograms (``subprog``/``call_sub``/``ld_func``), kfuncs, every LD_IMM64 pseudo
source, and ``stack()`` slots.  The result of :meth:`Asm.assemble` is a list of
:class:`~pybpf.isa.Instruction` with jump offsets resolved (a jump beyond 16 bits
is relaxed over ``gotol``), each checked by :func:`pybpf.isa.check`, and every
symbolic operand still attached; errors name the DSL call's file and line.
"""

from __future__ import annotations

import os
import sys
from itertools import count
from typing import Any, Callable, Optional, Union

from . import isa
from .cdecl import CType, EnumValueRef, FieldRef, core_field_value
from .errors import AsmError
from .record import FrozenRecord

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

MAX_BPF_STACK = 512  # bytes of stack per frame (include/linux/filter.h)
MapRef = Union[str, int, Any]  # a name, an fd, a spec with .name, a live map with fileno()


def _map_ref(ref: MapRef) -> tuple[Optional[str], int]:
    """(name, fd) of a map reference: exactly one of them says which map."""
    if isinstance(ref, str):
        return ref, 0
    if isinstance(ref, int):
        return None, ref
    if hasattr(ref, "fileno"):
        return None, int(ref.fileno())
    name = getattr(ref, "name", None)
    if not isinstance(name, str):
        raise AsmError(f"not a map reference: {ref!r}")
    return name, 0


class CoreAccess(FrozenRecord):
    """What a CO-RE relocation refers to: a field, a type, or an enumerator.

    ``root`` is the local root type (its name, flavor included, is what
    candidates are searched by); ``access`` is libbpf's access string.
    """

    _fields = ("kind", "root", "access", "field")
    _defaults = {"field": ""}

    kind: int
    root: CType
    access: str
    field: str

    @classmethod
    def of_field(cls, kind: int, ref: FieldRef) -> CoreAccess:
        return cls(kind, ref.root, ref.access, ref.dotted)


_CORE_LABELS = count()  # unique label names for the code read_bitfield emits


def _name(field: FieldRef) -> str:
    return f"{field.root.name}.{field.dotted}"


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
        self.origins: list[tuple[str, int]] = []  # file and line of each instruction's DSL call

    # -- plumbing -------------------------------------------------------
    def emit(self, insn: isa.Instruction) -> Asm:
        self.insns.append(insn)
        frame = sys._getframe(1)
        while frame.f_code.co_filename == __file__ and frame.f_back is not None:
            frame = frame.f_back
        self.origins.append((frame.f_code.co_filename, frame.f_lineno))
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
    def call(self, helper: Union[str, int]) -> Asm:
        """Call a helper by name (``"ktime_get_ns"``); its number is read from
        the target kernel's ``enum bpf_func_id`` at load time.  A number is used as is."""
        if isinstance(helper, int):
            code = isa.BPF_JMP | isa.BPF_CALL
            return self.emit(isa.Instruction(code, imm=_check_imm32(helper, "call")))
        if helper.startswith("bpf_"):  # call("bpf_ktime_get_ns") reads like the C
            helper = helper[4:]
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_CALL, helper=helper))

    def exit(self) -> Asm:
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_EXIT))

    # -- maps ------------------------------------------------------------
    def ld_map_fd(self, dst: Reg, map_name: MapRef) -> Asm:
        """``dst = &map`` (BPF_PSEUDO_MAP_FD).  A map by name or spec (anything with a
        ``name``): the loader patches in the fd; a live map (``fileno()``) or an fd: as is."""
        name, fd = _map_ref(map_name)
        return self.emit(
            isa.Instruction(isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_MAP_FD, imm=fd, map=name)
        )

    def ld_map_value(self, dst: Reg, map_name: MapRef, offset: int = 0) -> Asm:
        """``dst = &map_value[0] + offset`` (BPF_PSEUDO_MAP_VALUE, Linux 5.2).

        Loads through this pointer from a frozen BPF_F_RDONLY_PROG map are
        constants to the verifier, which then prunes branches they decide."""
        name, fd = _map_ref(map_name)
        return self.emit(
            isa.Instruction(
                isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_MAP_VALUE, imm=offset << 32 | fd, map=name
            )
        )

    # -- the rest of the ISA (RFC 9669 and the kernel's later additions) --------
    def mul32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MUL, isa.BPF_ALU, dst, src)

    def div32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_DIV, isa.BPF_ALU, dst, src)

    def mod32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_MOD, isa.BPF_ALU, dst, src)

    def or32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_OR, isa.BPF_ALU, dst, src)

    def xor32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_XOR, isa.BPF_ALU, dst, src)

    def lsh32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_LSH, isa.BPF_ALU, dst, src)

    def rsh32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_RSH, isa.BPF_ALU, dst, src)

    def arsh32(self, dst: Reg, src: Operand) -> Asm:
        return self._alu(isa.BPF_ARSH, isa.BPF_ALU, dst, src)

    def neg32(self, dst: Reg) -> Asm:
        return self.emit(isa.Instruction(isa.BPF_ALU | isa.BPF_NEG, dst.index))

    def _signed(self, op: int, cls: int, dst: Reg, src: Operand) -> Asm:
        self._alu(op, cls, dst, src)
        self.insns[-1] = self.insns[-1].with_(off=isa.BPF_SIGNED_DIV_OFF)
        return self

    def sdiv(self, dst: Reg, src: Operand) -> Asm:
        """Signed 64-bit division (cpu v4, Linux 6.6); by zero gives 0."""
        return self._signed(isa.BPF_DIV, isa.BPF_ALU64, dst, src)

    def smod(self, dst: Reg, src: Operand) -> Asm:
        """Signed 64-bit modulo (cpu v4, Linux 6.6); by zero leaves dst."""
        return self._signed(isa.BPF_MOD, isa.BPF_ALU64, dst, src)

    def sdiv32(self, dst: Reg, src: Operand) -> Asm:
        return self._signed(isa.BPF_DIV, isa.BPF_ALU, dst, src)

    def smod32(self, dst: Reg, src: Operand) -> Asm:
        return self._signed(isa.BPF_MOD, isa.BPF_ALU, dst, src)

    def movsx(self, dst: Reg, src: Reg, bits: int) -> Asm:
        """``dst = (s<bits>)src`` sign-extended to 64 bits (cpu v4, Linux 6.6)."""
        if bits not in (8, 16, 32):
            raise AsmError(f"movsx: {bits}-bit source (8, 16 or 32)")
        code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X
        return self.emit(isa.Instruction(code, dst.index, src.index, bits))

    def movsx32(self, dst: Reg, src: Reg, bits: int) -> Asm:
        """``wdst = (s<bits>)wsrc`` (cpu v4, Linux 6.6)."""
        if bits not in (8, 16):
            raise AsmError(f"movsx32: {bits}-bit source (8 or 16)")
        code = isa.BPF_ALU | isa.BPF_MOV | isa.BPF_X
        return self.emit(isa.Instruction(code, dst.index, src.index, bits))

    def _end(self, code: int, dst: Reg, bits: int) -> Asm:
        if bits not in (16, 32, 64):
            raise AsmError(f"byte swap of {bits} bits (16, 32 or 64)")
        return self.emit(isa.Instruction(code | isa.BPF_END, dst.index, 0, 0, bits))

    def le(self, dst: Reg, bits: int) -> Asm:
        """``dst = htole<bits>(dst)``: truncation on a little-endian machine."""
        return self._end(isa.BPF_ALU | isa.BPF_TO_LE, dst, bits)

    def be(self, dst: Reg, bits: int) -> Asm:
        """``dst = htobe<bits>(dst)``."""
        return self._end(isa.BPF_ALU | isa.BPF_TO_BE, dst, bits)

    def bswap(self, dst: Reg, bits: int) -> Asm:
        """Unconditional byte swap (cpu v4, Linux 6.6)."""
        return self._end(isa.BPF_ALU64 | isa.BPF_TO_LE, dst, bits)

    def addr_space_cast(self, dst: Reg, src: Reg, dst_as: int, src_as: int) -> Asm:
        """Arena pointer cast between address spaces (Linux 6.9)."""
        if not (0 <= dst_as < 1 << 16 and 0 <= src_as < 1 << 16):
            raise AsmError("addr_space_cast: address spaces are 16-bit")
        code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X
        imm = dst_as << 16 | src_as
        return self.emit(
            isa.Instruction(code, dst.index, src.index, isa.BPF_ADDR_SPACE_CAST, imm)
        )

    def ldxsx(self, dst: Reg, src: Reg, off: int, *, size: int) -> Asm:
        """``dst = *(s<size*8> *)(src + off)``, sign-extended (cpu v4, Linux 6.6)."""
        if size not in (1, 2, 4):
            raise AsmError(f"sign-extending load of {size} bytes (1, 2 or 4)")
        code = isa.BPF_LDX | isa.BPF_MEMSX | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, dst.index, src.index, self._off(off)))

    def ld_abs(self, imm: int, *, size: int) -> Asm:
        """``r0 = ntoh(*(u<size*8> *)(skb->data + imm))`` (socket filters; clobbers r1-r5)."""
        if size == 8:
            raise AsmError("legacy packet loads are 1, 2 or 4 bytes")
        code = isa.BPF_LD | isa.BPF_ABS | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, 0, 0, 0, _check_imm32(imm, "ld_abs")))

    def ld_ind(self, src: Reg, imm: int, *, size: int) -> Asm:
        """``r0 = ntoh(*(u<size*8> *)(skb->data + src + imm))``."""
        if size == 8:
            raise AsmError("legacy packet loads are 1, 2 or 4 bytes")
        code = isa.BPF_LD | isa.BPF_IND | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, 0, src.index, 0, _check_imm32(imm, "ld_ind")))

    def _atomic(self, dst: Reg, off: int, src: Reg, size: int, op: int) -> Asm:
        if size not in (4, 8) and op not in (isa.BPF_LOAD_ACQ, isa.BPF_STORE_REL):
            raise AsmError(f"atomic operation on {size} bytes (4 or 8)")
        code = isa.BPF_STX | isa.BPF_ATOMIC | isa.size_from_bytes(size)
        return self.emit(isa.Instruction(code, dst.index, src.index, self._off(off), op))

    def atomic_add(self, dst: Reg, off: int, src: Reg, *, size: int = 8,
                   fetch: bool = False) -> Asm:  # fmt: skip
        """``lock *(dst + off) += src``; with ``fetch``, src gets the old value (5.12)."""
        return self._atomic(dst, off, src, size, isa.BPF_ADD | (isa.BPF_FETCH if fetch else 0))

    def atomic_or(self, dst: Reg, off: int, src: Reg, *, size: int = 8,
                  fetch: bool = False) -> Asm:  # fmt: skip
        return self._atomic(dst, off, src, size, isa.BPF_OR | (isa.BPF_FETCH if fetch else 0))

    def atomic_and(self, dst: Reg, off: int, src: Reg, *, size: int = 8,
                   fetch: bool = False) -> Asm:  # fmt: skip
        return self._atomic(dst, off, src, size, isa.BPF_AND | (isa.BPF_FETCH if fetch else 0))

    def atomic_xor(self, dst: Reg, off: int, src: Reg, *, size: int = 8,
                   fetch: bool = False) -> Asm:  # fmt: skip
        return self._atomic(dst, off, src, size, isa.BPF_XOR | (isa.BPF_FETCH if fetch else 0))

    def atomic_xchg(self, dst: Reg, off: int, src: Reg, *, size: int = 8) -> Asm:
        """``src = xchg(dst + off, src)`` (Linux 5.12)."""
        return self._atomic(dst, off, src, size, isa.BPF_XCHG)

    def atomic_cmpxchg(self, dst: Reg, off: int, src: Reg, *, size: int = 8) -> Asm:
        """``r0 = cmpxchg(dst + off, r0, src)`` (Linux 5.12)."""
        return self._atomic(dst, off, src, size, isa.BPF_CMPXCHG)

    def load_acquire(self, dst: Reg, src: Reg, off: int, *, size: int) -> Asm:
        """``dst = load_acquire(src + off)`` (Linux 6.15): unlike the other atomics, dst
        is the result and src the address, as in a load."""
        code = isa.BPF_STX | isa.BPF_ATOMIC | isa.size_from_bytes(size)
        insn = isa.Instruction(code, dst.index, src.index, self._off(off), isa.BPF_LOAD_ACQ)
        return self.emit(insn)

    def store_release(self, dst: Reg, off: int, src: Reg, *, size: int) -> Asm:
        """``store_release(dst + off, src)`` (Linux 6.15)."""
        return self._atomic(dst, off, src, size, isa.BPF_STORE_REL)

    def gotol(self, target: str) -> Asm:
        """``gotol``: a jump with a 32-bit offset (cpu v4, Linux 6.6); ``ja`` turns into
        one by itself when its target is beyond 16 bits."""
        return self.emit(isa.Instruction(isa.BPF_JMP32 | isa.BPF_JA, label=target))

    def may_goto(self, target: str) -> Asm:
        """Jumps to ``target`` once the verifier's loop budget is spent (Linux 6.9)."""
        return self.emit(isa.Instruction(isa.BPF_JMP | isa.BPF_JCOND, label=target))

    def subprog(self, name: str) -> Asm:
        """Start a BPF subprogram (a bpf-to-bpf call target, Linux 4.16): r1-r5 are its
        arguments, r0 its result, r6-r9 and its own stack are preserved for the caller."""
        return self.label(name)

    def call_sub(self, name: str) -> Asm:
        """Call the subprogram ``name`` (BPF_PSEUDO_CALL, offset resolved at assemble)."""
        code = isa.BPF_JMP | isa.BPF_CALL
        return self.emit(isa.Instruction(code, 0, isa.BPF_PSEUDO_CALL, label=name))

    def call_kfunc(self, btf_id: int, module: int = 0) -> Asm:
        """Call a kernel function by its BTF FUNC id (Linux 5.13); ``module`` indexes
        fd_array for a module's BTF, 0 is vmlinux."""
        code = isa.BPF_JMP | isa.BPF_CALL
        return self.emit(isa.Instruction(code, 0, isa.BPF_PSEUDO_KFUNC_CALL, module, btf_id))

    def ld_func(self, dst: Reg, name: str) -> Asm:
        """``dst = &subprog`` (BPF_PSEUDO_FUNC, Linux 5.13): callbacks of bpf_loop and co."""
        return self.emit(
            isa.Instruction(isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_FUNC, label=name)
        )

    def ld_btf_id(self, dst: Reg, btf_id: int, module_fd: int = 0) -> Asm:
        """``dst = &ksym`` of a BTF VAR (BPF_PSEUDO_BTF_ID, Linux 5.10)."""
        imm = module_fd << 32 | btf_id
        return self.emit(isa.Instruction(isa.LD_IMM64, dst.index, isa.BPF_PSEUDO_BTF_ID, imm=imm))

    def ld_map_idx(self, dst: Reg, index: int, offset: Optional[int] = None) -> Asm:
        """``dst = fd_array[index]`` (BPF_PSEUDO_MAP_IDX, Linux 5.14), or with ``offset``
        a pointer into its value (BPF_PSEUDO_MAP_IDX_VALUE)."""
        if offset is None:
            src, imm = isa.BPF_PSEUDO_MAP_IDX, index
        else:
            src, imm = isa.BPF_PSEUDO_MAP_IDX_VALUE, offset << 32 | index
        return self.emit(isa.Instruction(isa.LD_IMM64, dst.index, src, imm=imm))

    def stack(self, size: int, align: int = 8) -> int:
        """Allocate ``size`` bytes of the 512-byte stack; returns the offset from FP
        (negative), aligned to ``align``."""
        top = getattr(self, "_stack", 0) + size
        top = -(-top // align) * align
        if top > MAX_BPF_STACK:
            raise AsmError(f"stack: {top} bytes exceed the {MAX_BPF_STACK}-byte BPF stack")
        self._stack = top
        return -top

    # -- CO-RE -----------------------------------------------------------
    # Each method emits the instruction clang emits for the matching
    # bpf_core_read.h macro, with the *local* value in it (libbpf and the
    # kernel check it), and records the relocation.  Relocation kinds need
    # libbpf 0.x / Linux 5.17 (kernel-side CO-RE); type_matches Linux 6.1.

    def ldx_core(self, dst: Reg, src: Reg, field: FieldRef) -> Asm:
        """``dst = src->field``: offset and width relocated to the target kernel."""
        if field.bitfield:
            raise AsmError(f"{_name(field)} is a bitfield: use read_bitfield()")
        size = field.size
        if size not in isa.BYTES_SIZE:
            raise AsmError(f"{_name(field)}: {size}-byte field cannot be loaded")
        code = isa.BPF_LDX | isa.BPF_MEM | isa.size_from_bytes(size)
        core = CoreAccess.of_field(BPF_CORE_FIELD_BYTE_OFFSET, field)
        return self.emit(isa.Instruction(code, dst.index, src.index, field.offset, core=core))

    def add_offsetof(self, dst: Reg, field: FieldRef) -> Asm:
        """``dst += offsetof(root, field)`` (for taking a member's address)."""
        core = CoreAccess.of_field(BPF_CORE_FIELD_BYTE_OFFSET, field)
        code = isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K
        value = core_field_value(BPF_CORE_FIELD_BYTE_OFFSET, field)
        return self.emit(isa.Instruction(code, dst.index, 0, 0, value, core=core))

    def _core_value(self, dst: Reg, core: CoreAccess, value: int, wide: bool) -> Asm:
        """``dst = value`` as MOV (32-bit immediate) or LD_IMM64 (``wide``)."""
        if wide or not -(1 << 31) <= value < (1 << 31):
            return self.emit(isa.Instruction(isa.LD_IMM64, dst.index, 0, 0, value, core=core))
        code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
        return self.emit(isa.Instruction(code, dst.index, 0, 0, value, core=core))

    def _field_reloc(self, dst: Reg, kind: int, field: FieldRef, wide: bool) -> Asm:
        core = CoreAccess.of_field(kind, field)
        return self._core_value(dst, core, core_field_value(kind, field), wide)

    def field_exists(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_field_exists(field)``: 1 or 0 on the target kernel."""
        return self._field_reloc(dst, BPF_CORE_FIELD_EXISTS, field, wide)

    def field_size(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_field_size(field)`` on the target kernel (a bitfield's
        containing load size)."""
        return self._field_reloc(dst, BPF_CORE_FIELD_BYTE_SIZE, field, wide)

    def field_offset(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_field_offset(field)`` (a bitfield's containing load offset)."""
        return self._field_reloc(dst, BPF_CORE_FIELD_BYTE_OFFSET, field, wide)

    def field_signed(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """``dst = 1`` if the field is a signed integer or signed enum on the target."""
        return self._field_reloc(dst, BPF_CORE_FIELD_SIGNED, field, wide)

    def field_lshift(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """Left shift that puts the field's top bit at bit 63 of its 64-bit load."""
        return self._field_reloc(dst, BPF_CORE_FIELD_LSHIFT_U64, field, wide)

    def field_rshift(self, dst: Reg, field: FieldRef, *, wide: bool = False) -> Asm:
        """Right shift (64 - bit size) that brings the field down after the left shift."""
        return self._field_reloc(dst, BPF_CORE_FIELD_RSHIFT_U64, field, wide)

    def read_bitfield(self, dst: Reg, src: Reg, field: FieldRef, tmp: Reg) -> Asm:
        """``dst = BPF_CORE_READ_BITFIELD(src, field)`` for a pointer the verifier lets
        the program dereference (tp_btf arguments, ``bpf_get_current_task_btf()``).

        As bpf_core_read.h: load the containing unit at the relocated offset and
        size, shift left then right (arithmetic if signed).  Every choice is a
        relocated constant, so the verifier keeps one path.  Clobbers ``tmp``."""
        n = next(_CORE_LABELS)
        end = f"__core_bf{n}"
        self.mov(dst, src)
        self.add_offsetof(dst, field)
        self.field_size(tmp, field)
        for size in (1, 2, 4):
            self.jeq(tmp, size, f"{end}_{size}")
        self.ldx(dst, dst, 0, size=8).ja(f"{end}_loaded")
        for size in (1, 2, 4):
            self.label(f"{end}_{size}").ldx(dst, dst, 0, size=size).ja(f"{end}_loaded")
        self.label(f"{end}_loaded")
        lsh = CoreAccess.of_field(BPF_CORE_FIELD_LSHIFT_U64, field)
        rsh = CoreAccess.of_field(BPF_CORE_FIELD_RSHIFT_U64, field)
        lval = core_field_value(BPF_CORE_FIELD_LSHIFT_U64, field)
        rval = core_field_value(BPF_CORE_FIELD_RSHIFT_U64, field)
        self.emit(isa.Instruction(isa.BPF_ALU64 | isa.BPF_LSH | isa.BPF_K, dst.index, 0, 0,
                                  lval, core=lsh))  # fmt: skip
        self.field_signed(tmp, field)
        self.jeq(tmp, 0, f"{end}_unsigned")
        self.emit(isa.Instruction(isa.BPF_ALU64 | isa.BPF_ARSH | isa.BPF_K, dst.index, 0, 0,
                                  rval, core=rsh))  # fmt: skip
        self.ja(end)
        self.label(f"{end}_unsigned")
        self.emit(isa.Instruction(isa.BPF_ALU64 | isa.BPF_RSH | isa.BPF_K, dst.index, 0, 0,
                                  rval, core=rsh))  # fmt: skip
        return self.label(end)

    def _type_reloc(self, dst: Reg, kind: int, ctype: CType, value: int, wide: bool) -> Asm:
        return self._core_value(dst, CoreAccess(kind, ctype, "0"), value, wide)

    def type_exists(self, dst: Reg, ctype: CType, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_type_exists(T)``: a compatible type of this name exists."""
        return self._type_reloc(dst, BPF_CORE_TYPE_EXISTS, ctype, 1, wide)

    def type_matches(self, dst: Reg, ctype: CType, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_type_matches(T)`` (stricter than exists; Linux 6.1)."""
        return self._type_reloc(dst, BPF_CORE_TYPE_MATCHES, ctype, 1, wide)

    def type_size(self, dst: Reg, ctype: CType, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_type_size(T)`` on the target kernel (0 if it has no such type)."""
        return self._type_reloc(dst, BPF_CORE_TYPE_SIZE, ctype, ctype.size, wide)

    def type_id_local(self, dst: Reg, ctype: CType, *, wide: bool = True) -> Asm:
        """``dst = bpf_core_type_id_local(T)``: T's id in the program's BTF."""
        return self._type_reloc(dst, BPF_CORE_TYPE_ID_LOCAL, ctype, 0, wide)

    def type_id_target(self, dst: Reg, ctype: CType, *, wide: bool = True) -> Asm:
        """``dst = bpf_core_type_id_kernel(T)``: T's id in the kernel's BTF (0 if none)."""
        return self._type_reloc(dst, BPF_CORE_TYPE_ID_TARGET, ctype, 0, wide)

    def enumval_exists(self, dst: Reg, value: EnumValueRef, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_enum_value_exists(enum e, NAME)``."""
        core = CoreAccess(BPF_CORE_ENUMVAL_EXISTS, value.root, value.access, value.name)
        return self._core_value(dst, core, 1, wide)

    def enumval_value(self, dst: Reg, value: EnumValueRef, *, wide: bool = False) -> Asm:
        """``dst = bpf_core_enum_value(enum e, NAME)`` on the target kernel; LD_IMM64 when
        ``wide`` or when the local value does not fit in 32 bits."""
        core = CoreAccess(BPF_CORE_ENUMVAL_VALUE, value.root, value.access, value.name)
        local = value.value
        if value.root.size < 8:  # libbpf reads a 32-bit enumerator as __s32
            local = (local & 0xFFFFFFFF) - ((local & 0x80000000) << 1)
        return self._core_value(dst, core, local, wide)

    # -- result ----------------------------------------------------------
    def assemble(self, require_exit: bool = True) -> list[isa.Instruction]:
        """Resolve labels into jump offsets (in 8-byte slots, range-checked) and check
        every instruction (:func:`pybpf.isa.check`).  A jump whose target is beyond 16
        bits is relaxed: ``ja`` becomes ``gotol``, a conditional jump jumps over one
        (cpu v4, Linux 6.6).  Errors name the DSL call (``runqslower.py:123``)."""
        origins = self.origins if len(self.origins) == len(self.insns) else None

        def where(i: int) -> str:
            if origins is None or i >= len(origins):
                return ""
            return f"{os.path.basename(origins[i][0])}:{origins[i][1]}: "

        return link(self.insns, self.labels, require_exit=require_exit, where=where, relax=True)


_INVERSE = {
    isa.BPF_JEQ: isa.BPF_JNE, isa.BPF_JNE: isa.BPF_JEQ, isa.BPF_JGT: isa.BPF_JLE,
    isa.BPF_JLE: isa.BPF_JGT, isa.BPF_JGE: isa.BPF_JLT, isa.BPF_JLT: isa.BPF_JGE,
    isa.BPF_JSGT: isa.BPF_JSLE, isa.BPF_JSLE: isa.BPF_JSGT, isa.BPF_JSGE: isa.BPF_JSLT,
    isa.BPF_JSLT: isa.BPF_JSGE,
}  # fmt: skip


def _label_in_imm(insn: isa.Instruction) -> bool:
    """Whether a label resolves into ``imm`` (gotol, bpf-to-bpf call, func) not ``off``."""
    code, cls = insn.opcode, insn.opcode & 0x07
    return (
        code == isa.LD_IMM64
        or (cls == isa.BPF_JMP32 and code & 0xF0 == isa.BPF_JA)
        or (cls == isa.BPF_JMP and code & 0xF0 == isa.BPF_CALL)
    )


def _relaxed(insn: isa.Instruction) -> list[isa.Instruction]:
    """A far jump as instructions that reach any 32-bit distance: ``ja`` -> ``gotol``;
    ``if c goto L`` -> ``if !c goto +1; gotol L``, or for ``jset`` and ``may_goto``
    (no inverse) ``if c goto +1; goto +1; gotol L``."""
    gotol = isa.Instruction(isa.BPF_JMP32 | isa.BPF_JA, label=insn.label, comment=insn.comment)
    if insn.opcode == isa.BPF_JMP | isa.BPF_JA:
        return [gotol]
    op = insn.opcode & 0xF0
    if op in _INVERSE:
        inverted = insn.with_(opcode=insn.opcode & ~0xF0 | _INVERSE[op], off=1, label=None)
        return [inverted, gotol]
    skip = isa.Instruction(isa.BPF_JMP | isa.BPF_JA, off=1)
    return [insn.with_(off=1, label=None), skip, gotol]


def link(
    insns: list[isa.Instruction],
    labels: dict[str, int],
    *,
    require_exit: bool = False,
    where: Optional[Callable[[int], str]] = None,
    relax: bool = False,
) -> list[isa.Instruction]:
    """Resolve every ``label`` (index into ``insns``) to a slot delta: ``off`` of jumps,
    ``imm`` of ``gotol``, bpf-to-bpf calls and ``func`` references, then check each
    instruction.  With ``relax``, jumps beyond 16 bits are rewritten (:func:`_relaxed`);
    without, they are errors, as in LLVM.  ``where(i)`` prefixes error messages."""
    insns = list(insns)
    origin = list(range(len(insns)))  # index in the caller's list, for `where`
    labels = dict(labels)

    def at(i: int) -> str:
        return where(origin[i]) if where is not None else ""

    while True:
        slot_of: list[int] = []
        slot = 0
        for insn in insns:
            slot_of.append(slot)
            slot += insn.slots
        slot_of.append(slot)
        out: list[isa.Instruction] = []
        far: Optional[int] = None
        for index, insn in enumerate(insns):
            if insn.label is not None:
                target = labels.get(insn.label)
                if target is None:
                    raise AsmError(f"{at(index)}jump to undefined label {insn.label!r}")
                delta = slot_of[target] - slot_of[index] - 1
                if _label_in_imm(insn):
                    if not -(1 << 31) <= delta < (1 << 31):
                        what = f"reference to {insn.label!r} spans {delta} slots"
                        raise AsmError(f"{at(index)}{what}")
                    imm = delta & 0xFFFFFFFF if insn.opcode == isa.LD_IMM64 else delta
                    insn = insn.with_(imm=imm)
                elif -(1 << 15) <= delta < (1 << 15):
                    insn = insn.with_(off=delta)
                elif relax:
                    far = index
                    break
                else:
                    hint = "use gotol" if insn.opcode == isa.BPF_JMP | isa.BPF_JA else (
                        "jump to a nearby gotol")  # fmt: skip
                    raise AsmError(
                        f"{at(index)}jump to {insn.label!r} spans {delta} slots: "
                        f"beyond 16 bits ({hint})"
                    )
            problem = isa.check(insn)
            if problem is not None and insn.raw is None:
                raise AsmError(f"{at(index)}not an eBPF instruction: {problem} ({insn})")
            out.append(insn)
        if far is None:
            break
        replacement = _relaxed(insns[far])
        grow = len(replacement) - 1
        insns[far : far + 1] = replacement
        origin[far : far + 1] = [origin[far]] * len(replacement)
        labels = {name: i + grow if i > far else i for name, i in labels.items()}
    ends = (isa.BPF_JMP | isa.BPF_EXIT, isa.BPF_JMP | isa.BPF_JA, isa.BPF_JMP32 | isa.BPF_JA)
    if require_exit and (not out or out[-1].opcode not in ends):
        raise AsmError("program does not end with exit or an unconditional jump")
    return out
