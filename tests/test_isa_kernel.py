"""The kernel as an execution oracle for the instruction set.

Programs built with the DSL compute every ALU, JMP, load/store, atomic and legacy packet
operation on many operand pairs (0, 1, -1, INT_MIN, INT_MAX, shifts >= width, division by
zero, ...) read from an ARRAY map the verifier cannot see into, and write each result back
to the map.  They run in the kernel with BPF_PROG_TEST_RUN (socket filters) and, in Python,
on :class:`Machine`, a reference semantics of RFC 9669 written from the RFC; the whole map
value and the return value must agree.
"""

from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy import require_root

from pybpf import isa
from pybpf.asm import FP, R0, R1, R2, R3, R6, R8, R9, Asm, Reg

pytestmark = pytest.mark.kernel

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def s64(v: int) -> int:
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def bswap(v: int, bits: int) -> int:
    return int.from_bytes((v & ((1 << bits) - 1)).to_bytes(bits // 8, "little"), "big")


# ---------------------------------------------------------------------------------------------
# reference semantics (RFC 9669), one instruction at a time


class Exit(Exception):
    pass


@dataclass
class Machine:
    """A flat address space with one map value and a stack; registers are unsigned 64-bit."""

    value: bytearray
    packet: bytes = b""
    base: int = 0x1000_0000
    stack: bytearray = field(default_factory=lambda: bytearray(512 * 8))  # 8 frames
    stack_top: int = 0x2000_0000
    regs: list[int] = field(default_factory=lambda: [0] * 11)
    frames: list[tuple[int, list[int]]] = field(default_factory=list)  # return pc, r6-r10

    def _region(self, addr: int, n: int) -> tuple[bytearray, int]:
        if self.base <= addr and addr + n <= self.base + len(self.value):
            return self.value, addr - self.base
        bottom = self.stack_top - len(self.stack)
        if bottom <= addr and addr + n <= self.stack_top:
            return self.stack, addr - bottom
        raise AssertionError(f"reference: access to {addr:#x} outside memory")

    def load(self, addr: int, n: int) -> int:
        region, at = self._region(addr, n)
        return int.from_bytes(region[at : at + n], "little")

    def store(self, addr: int, n: int, v: int) -> None:
        region, at = self._region(addr, n)
        region[at : at + n] = (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    def run(self, insns: list[isa.Instruction]) -> int:
        self.regs[10] = self.stack_top
        starts, slot = {}, 0
        for i, insn in enumerate(insns):
            starts[slot] = i
            slot += insn.slots
        pc = 0
        try:
            while True:
                insn = insns[starts[pc]]
                pc = self.step(insn, pc)
        except Exit:
            return self.regs[0] & M32

    def alu(self, op: int, is64: bool, a: int, b: int, off: int) -> int:
        bits = 64 if is64 else 32
        mask = M64 if is64 else M32
        a, b = a & mask, b & mask
        sa, sb = sext(a, bits), sext(b, bits)
        if op == isa.BPF_ADD:
            return a + b
        if op == isa.BPF_SUB:
            return a - b
        if op == isa.BPF_MUL:
            return a * b
        if op == isa.BPF_DIV:
            if b == 0:
                return 0
            if off == 0:
                return a // b
            q = abs(sa) // abs(sb)
            return q if (sa < 0) == (sb < 0) else -q
        if op == isa.BPF_MOD:
            if b == 0:
                return a
            if off == 0:
                return a % b
            r = abs(sa) % abs(sb)
            return -r if sa < 0 else r
        if op == isa.BPF_OR:
            return a | b
        if op == isa.BPF_AND:
            return a & b
        if op == isa.BPF_XOR:
            return a ^ b
        if op == isa.BPF_LSH:
            return a << (b & (bits - 1))
        if op == isa.BPF_RSH:
            return a >> (b & (bits - 1))
        if op == isa.BPF_ARSH:
            return sa >> (b & (bits - 1))
        if op == isa.BPF_MOV:
            return b if off == 0 else sext(b, off)
        raise AssertionError(op)

    @staticmethod
    def cond(op: int, is64: bool, a: int, b: int) -> bool:
        bits = 64 if is64 else 32
        mask = M64 if is64 else M32
        a, b = a & mask, b & mask
        sa, sb = sext(a, bits), sext(b, bits)
        return {
            isa.BPF_JEQ: a == b, isa.BPF_JNE: a != b, isa.BPF_JGT: a > b, isa.BPF_JGE: a >= b,
            isa.BPF_JLT: a < b, isa.BPF_JLE: a <= b, isa.BPF_JSGT: sa > sb, isa.BPF_JSGE: sa >= sb,
            isa.BPF_JSLT: sa < sb, isa.BPF_JSLE: sa <= sb, isa.BPF_JSET: bool(a & b),
        }[op]  # fmt: skip

    def step(self, insn: isa.Instruction, pc: int) -> int:
        r = self.regs
        code, cls = insn.opcode, insn.opcode & 7
        op, x = code & 0xF0, code & isa.BPF_X
        nxt = pc + insn.slots
        if cls in (isa.BPF_ALU, isa.BPF_ALU64):
            is64 = cls == isa.BPF_ALU64
            if op == isa.BPF_NEG:
                v = -r[insn.dst]
            elif op == isa.BPF_END:
                if cls == isa.BPF_ALU and not x:  # to little endian: truncation
                    v = r[insn.dst] & ((1 << insn.imm) - 1)
                else:
                    v = bswap(r[insn.dst], insn.imm)
                r[insn.dst] = v & M64
                return nxt
            else:
                b = r[insn.src] if x else (s64(s32(insn.imm)) & M64)
                v = self.alu(op, is64, r[insn.dst], b, insn.off)
            r[insn.dst] = v & (M64 if is64 else M32)
            return nxt
        if cls in (isa.BPF_JMP, isa.BPF_JMP32):
            if code == isa.BPF_JMP | isa.BPF_EXIT:
                if not self.frames:
                    raise Exit
                back, saved = self.frames.pop()  # bpf-to-bpf return: r6-r10 restored
                r[6:11] = saved
                return back
            if code == isa.BPF_JMP | isa.BPF_CALL and insn.src == isa.BPF_PSEUDO_CALL:
                self.frames.append((nxt, r[6:11]))
                r[10] -= 512  # the callee's own stack frame
                return nxt + s32(insn.imm)
            if code == isa.BPF_JMP | isa.BPF_JA:
                return nxt + insn.off
            if code == isa.BPF_JMP32 | isa.BPF_JA:
                return nxt + s32(insn.imm)
            b = r[insn.src] if x else s64(s32(insn.imm)) & M64
            taken = self.cond(op, cls == isa.BPF_JMP, r[insn.dst], b)
            return nxt + insn.off if taken else nxt
        mode, n = code & 0xE0, isa.SIZE_BYTES[code & 0x18]
        if code == isa.LD_IMM64:
            if insn.src == isa.BPF_PSEUDO_MAP_VALUE:
                r[insn.dst] = self.base + (insn.imm >> 32)
            else:
                r[insn.dst] = insn.imm & M64
            return nxt
        if cls == isa.BPF_LD:  # legacy packet loads: network byte order, out of bounds exits
            at = s32(insn.imm) + (s64(r[insn.src]) if mode == isa.BPF_IND else 0)
            if at < 0 or at + n > len(self.packet):
                r[0] = 0
                raise Exit
            r[0] = int.from_bytes(self.packet[at : at + n], "big")
            return nxt
        if cls == isa.BPF_LDX:
            v = self.load(r[insn.src] + insn.off, n)
            r[insn.dst] = (sext(v, 8 * n) & M64) if mode == isa.BPF_MEMSX else v
            return nxt
        imm = insn.imm
        if cls == isa.BPF_STX and mode == isa.BPF_ATOMIC and imm == isa.BPF_LOAD_ACQ:
            r[insn.dst] = self.load(r[insn.src] + insn.off, n)  # a load: dst = *(src + off)
            return nxt
        addr = r[insn.dst] + insn.off
        if cls == isa.BPF_ST:
            self.store(addr, n, s32(insn.imm))
            return nxt
        if mode == isa.BPF_MEM:
            self.store(addr, n, r[insn.src])
            return nxt
        if imm == isa.BPF_STORE_REL:
            self.store(addr, n, r[insn.src])
            return nxt
        mask = (1 << (8 * n)) - 1
        old = self.load(addr, n)
        src = r[insn.src] & mask
        if imm == isa.BPF_XCHG:
            self.store(addr, n, src)
            r[insn.src] = old
        elif imm == isa.BPF_CMPXCHG:
            if old == r[0] & mask:
                self.store(addr, n, src)
            r[0] = old
        else:
            new = {isa.BPF_ADD: old + src, isa.BPF_OR: old | src, isa.BPF_AND: old & src,
                   isa.BPF_XOR: old ^ src}[imm & ~isa.BPF_FETCH]  # fmt: skip
            self.store(addr, n, new)
            if imm & isa.BPF_FETCH:
                r[insn.src] = old
        return nxt


# ---------------------------------------------------------------------------------------------
# operands

EDGES = [0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0x7FFFFFFF,
         0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 63) - 1, 1 << 63, M64, M64 - 1,
         -7 & M64, 0x1234_5678_9ABC_DEF0, 0xFFFF_FFFF_8000_0000, 0x8000_0000_FFFF_FFFF]  # fmt: skip
IMMS = [0, 1, -1, 2, 7, -7, 31, 32, 33, 63, 64, 0x80, -0x80, 0x7FFFFFFF, -0x80000000]
TABLE = 8 * len(EDGES)  # the map value starts with EDGES, then the results


def operand(i: int) -> int:
    """Offset of EDGES[i] in the map value."""
    return 8 * i


@dataclass
class Case:
    """One program: the DSL fills in its body; results are stored after the operand table."""

    name: str
    body: Callable[[Asm, Callable[..., int]], None]
    extra: int = 0  # bytes of scratch after the results
    tail: Optional[Callable[[Asm], None]] = None  # subprograms, after the main exit
    packet: bytes = bytes(range(64))


@pytest.fixture(scope="module")
def kernel() -> object:
    require_root()
    from pybpf import syscall, uapi

    return syscall, uapi


def build(case: Case, map_ref: object) -> tuple[list[isa.Instruction], int]:
    a = Asm()
    a.mov(R6, R1)  # ctx for legacy packet loads
    a.ld_map_value(R9, map_ref, 0)
    outs = [TABLE]

    def out(n: int = 8) -> int:
        at = outs[0]
        outs[0] += n
        return at

    case.body(a, out)
    if outs[0] > 32767:
        raise AssertionError(f"{case.name}: results beyond 16-bit offsets")
    a.mov(R0, 1)
    a.exit()
    if case.tail is not None:
        case.tail(a)
    return a.assemble(), outs[0] + case.extra


def missing_features(insns: list[isa.Instruction]) -> list[str]:
    """The instruction families of ``insns`` the running kernel's verifier lacks, as
    pybpf's feature probes say (older kernels refuse cpu v4, newer atomics, ...)."""
    from pybpf import probes

    needed = {isa.required_feature(i) for i in insns} - {None}
    return sorted(f for f in needed if not probes.have_insn(f))  # type: ignore[arg-type]


def execute(kernel: object, case: Case) -> Optional[int]:
    """Run ``case`` in the kernel and in the reference; they must agree.  On a kernel whose
    probes say it lacks one of the case's instruction families, the verifier must instead
    refuse the program as an unknown encoding (None is returned)."""
    syscall, uapi = kernel  # type: ignore[misc]
    insns, size = build(case, 0)
    missing = missing_features(insns)
    if missing:
        from pybpf.errors import VerifierError

        size = max(size, TABLE + 8)
        with syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, size, 1, 0, "isa_oracle") as mfd:
            insns, _ = build(case, mfd.fileno())
            with pytest.raises(VerifierError) as refused:
                syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, isa.encode(insns)).close()
        assert ENCODING_ERRORS.search(refused.value.log), (case.name, missing, refused.value)
        return None
    size = max(size, TABLE + 8)
    initial = bytearray(size)
    for i, v in enumerate(EDGES):
        struct.pack_into("<Q", initial, operand(i), v)
    for i in range(TABLE, size):
        initial[i] = (i * 37 + 11) & 0xFF  # results and scratch start as a known pattern
    with syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, size, 1, 0, "isa_oracle") as mfd:
        syscall.map_update_elem(mfd.fileno(), b"\0\0\0\0", bytes(initial))
        insns, _ = build(case, mfd.fileno())
        with syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, isa.encode(insns)) as pfd:
            result = syscall.prog_test_run(pfd.fileno(), case.packet)
        got = syscall.map_lookup_elem(mfd.fileno(), b"\0\0\0\0", size)
    # a socket filter's skb data starts after the 14-byte Ethernet header of data_in
    machine = Machine(bytearray(initial), case.packet[14:])
    want_ret = machine.run(insns)
    assert result.retval == want_ret, case.name
    if got != bytes(machine.value):
        for at in range(TABLE, size, 8):
            k, m = got[at : at + 8], machine.value[at : at + 8]
            where = f"{case.name}: result #{(at - TABLE) // 8}"
            assert k == m, f"{where}: kernel {k.hex()} ref {m.hex()}"
    return result.retval


# ---------------------------------------------------------------------------------------------
# the cases

ALU_OPS = {
    "add": (isa.BPF_ADD, 0), "sub": (isa.BPF_SUB, 0), "mul": (isa.BPF_MUL, 0),
    "div": (isa.BPF_DIV, 0), "mod": (isa.BPF_MOD, 0), "sdiv": (isa.BPF_DIV, 1),
    "smod": (isa.BPF_MOD, 1), "or": (isa.BPF_OR, 0), "and": (isa.BPF_AND, 0),
    "xor": (isa.BPF_XOR, 0), "lsh": (isa.BPF_LSH, 0), "rsh": (isa.BPF_RSH, 0),
    "arsh": (isa.BPF_ARSH, 0), "mov": (isa.BPF_MOV, 0),
}  # fmt: skip
DSL_NAMES = {"and": "and_", "or": "or_"}


def dsl_alu(a: Asm, name: str, is64: bool) -> Callable[[Reg, object], Asm]:
    method = DSL_NAMES.get(name, name) + ("" if is64 else "32")
    if not hasattr(type(a), method):  # add32/sub32/and32 and mov32 exist; the rest via _alu
        op, off = ALU_OPS[name]

        def emit(dst: Reg, src: object) -> Asm:
            cls = isa.BPF_ALU64 if is64 else isa.BPF_ALU
            a._alu(op, cls, dst, src)  # type: ignore[arg-type]
            a.insns[-1] = a.insns[-1].with_(off=off)
            return a

        return emit
    return getattr(a, method)


def alu_reg_case(name: str, is64: bool) -> Case:
    def body(a: Asm, out: Callable[..., int]) -> None:
        for i in range(len(EDGES)):
            for j in range(len(EDGES)):
                a.ldx(R1, R9, operand(i), size=8)
                a.ldx(R2, R9, operand(j), size=8)
                dsl_alu(a, name, is64)(R1, R2)
                a.stx(R9, out(), R1, size=8)

    return Case(f"{name}{'' if is64 else '32'} reg", body)


def alu_imm_case(name: str, is64: bool) -> Case:
    op, _ = ALU_OPS[name]
    bits = 64 if is64 else 32

    def body(a: Asm, out: Callable[..., int]) -> None:
        for imm in IMMS:
            if op in (isa.BPF_DIV, isa.BPF_MOD) and imm == 0:
                continue  # the verifier rejects division by a zero immediate
            if op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH) and not 0 <= imm < bits:
                continue  # ... and shifts by an immediate >= the width
            for i in range(len(EDGES)):
                a.ldx(R1, R9, operand(i), size=8)
                dsl_alu(a, name, is64)(R1, imm)
                a.stx(R9, out(), R1, size=8)

    return Case(f"{name}{'' if is64 else '32'} imm", body)


def unary_case() -> Case:
    def body(a: Asm, out: Callable[..., int]) -> None:
        ops: list[Callable[[Reg], object]] = [a.neg, a.neg32]
        ops += [lambda d, b=b: a.movsx(d, R2, b) for b in (8, 16, 32)]
        ops += [lambda d, b=b: a.movsx32(d, R2, b) for b in (8, 16)]
        for kind in (a.le, a.be, a.bswap):
            ops += [lambda d, k=kind, b=b: k(d, b) for b in (16, 32, 64)]
        for emit in ops:
            for i in range(len(EDGES)):
                a.ldx(R1, R9, operand(i), size=8)
                a.ldx(R2, R9, operand(i), size=8)
                emit(R1)
                a.stx(R9, out(), R1, size=8)

    return Case("neg, movsx, byte swaps", body)


CONDS = ["jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle", "jset"]


def jump_case(cond: str, is64: bool, reg: bool) -> Case:
    """One condition per program: the verifier allows 8192 pending branches."""

    def body(a: Asm, out: Callable[..., int]) -> None:
        n = 0
        jump = getattr(a, cond + ("" if is64 else "32"))
        rhs: list[object] = list(range(len(EDGES))) if reg else IMMS
        for i in range(len(EDGES)):
            for b in rhs:
                a.ldx(R1, R9, operand(i), size=8)
                a.mov(R3, 1)
                if reg:
                    a.ldx(R2, R9, operand(b), size=8)  # type: ignore[arg-type]
                    jump(R1, R2, f"t{n}")
                else:
                    jump(R1, b, f"t{n}")
                a.mov(R3, 0)
                a.label(f"t{n}")
                a.stx(R9, out(1), R3, size=1)
                n += 1

    return Case(f"{cond}{'' if is64 else '32'} {'reg' if reg else 'imm'}", body)


def memory_case() -> Case:
    def body(a: Asm, out: Callable[..., int]) -> None:
        # loads of every width, zero- and sign-extending, at every alignment of the table
        for off in range(0, 64, 1):
            for size in (1, 2, 4, 8):
                if off + size <= TABLE and off % size == 0:
                    a.ldx(R1, R9, 8 * 17 + off, size=size)
                    a.stx(R9, out(), R1, size=8)
                    if size < 8:
                        a.ldxsx(R1, R9, 8 * 17 + off, size=size)
                        a.stx(R9, out(), R1, size=8)
        # stores of registers and immediates of every width into the pattern-filled results
        for i in range(len(EDGES)):
            for size in (1, 2, 4, 8):
                a.ldx(R1, R9, operand(i), size=8)
                a.stx(R9, out(), R1, size=size)
        for imm in IMMS:
            for size in (1, 2, 4, 8):
                a.st(R9, out(), imm, size=size)
        # the stack too: store, then load back through r10
        for i in range(len(EDGES)):
            a.ldx(R1, R9, operand(i), size=8)
            a.stx(FP, -8, R1, size=8)
            a.st(FP, -12, 0x5A5A5A5A, size=4)
            a.ldx(R2, FP, -12, size=4)
            a.ldx(R1, FP, -6, size=2)
            a.stx(R9, out(), R1, size=8)
            a.stx(R9, out(), R2, size=8)

    return Case("loads and stores", body)


ATOMICS = [("add", False), ("add", True), ("or", False), ("or", True), ("and", False),
           ("and", True), ("xor", False), ("xor", True), ("xchg", True),
           ("cmpxchg", True)]  # fmt: skip


def atomic_case(size: int, kind: str, fetch: bool) -> Case:
    def body(a: Asm, out: Callable[..., int]) -> None:
        for i in range(len(EDGES)):
            for j in range(len(EDGES)):
                cell, fetched = out(), out()
                a.ldx(R1, R9, operand(i), size=8)
                a.stx(R9, cell, R1, size=8)  # the memory operand
                a.ldx(R2, R9, operand(j), size=8)
                if kind == "cmpxchg":  # expect the old value on even j, something else on odd
                    a.ldx(R0, R9, operand(i if j % 2 == 0 else j), size=8)
                    a.atomic_cmpxchg(R9, cell, R2, size=size)
                    a.stx(R9, fetched, R0, size=8)
                    continue
                if kind == "xchg":
                    a.atomic_xchg(R9, cell, R2, size=size)
                else:
                    getattr(a, f"atomic_{kind}")(R9, cell, R2, size=size, fetch=fetch)
                a.stx(R9, fetched, R2, size=8)

    return Case(f"atomic {kind}{' fetch' if fetch else ''} {size * 8}-bit", body)


def acquire_release_case() -> Case:
    """load-acquire / store-release of every width (Linux 6.15)."""

    def body(a: Asm, out: Callable[..., int]) -> None:
        for i in range(len(EDGES)):
            for n in (1, 2, 4, 8):
                a.ldx(R1, R9, operand(i), size=8)
                a.store_release(R9, out(), R1, size=n)
                a.load_acquire(R2, R9, operand(i), size=n)
                a.stx(R9, out(), R2, size=8)

    return Case("load-acquire, store-release", body)


def packet_case() -> Case:
    def body(a: Asm, out: Callable[..., int]) -> None:
        for off in (0, 1, 13, 30, 44):
            for size in (1, 2, 4):
                a.ld_abs(off, size=size)
                a.stx(R9, out(), R0, size=8)
                a.mov(R8, off)
                a.ld_ind(R8, 2, size=size)
                a.stx(R9, out(), R0, size=8)
        a.mov(R8, 48)
        a.ld_ind(R8, 0, size=4)  # beyond the 50 bytes after the header: the program returns 0
        a.stx(R9, out(), R0, size=8)

    return Case("legacy packet loads", body)


def far_jump_case() -> Case:
    """Far jumps are relaxed (ja -> gotol; jeq -> jne over a gotol; jset -> jset over a
    goto over a gotol); bpf-to-bpf calls keep r6-r9.  Only the intended path returns 1."""

    def filler(a: Asm, name: str) -> None:
        a.label(name)
        for _ in range(33000):
            a.mov(R0, 0)
        a.exit()  # returns 0: the test wants 1

    def body(a: Asm, out: Callable[..., int]) -> None:
        a.ldx(R1, R9, operand(5), size=8)
        a.ldx(R2, R9, operand(6), size=8)
        a.call_sub("sum")
        a.stx(R9, out(), R0, size=8)
        a.ldx(R1, R9, operand(EDGES.index(7)), size=8)  # 7, which the verifier does not know
        a.jne(R1, 7, "filler1")  # near, not taken
        a.jeq(R1, 7, "far1")  # far, taken
        a.ja("filler1")
        filler(a, "filler1")
        a.label("far1")
        a.stx(R9, out(), R1, size=8)
        a.jset(R1, 8, "filler2")  # near, not taken
        a.jset(R1, 4, "far2")  # far, taken
        a.ja("filler2")
        filler(a, "filler2")
        a.label("far2")
        a.jne(R1, 7, "filler3")  # near, not taken
        a.ja("far3")  # far, unconditional
        filler(a, "filler3")
        a.label("far3")
        a.st(R9, out(), 0x3A, size=1)

    def tail(a: Asm) -> None:
        a.subprog("sum")
        a.mov(R0, R1)
        a.add(R0, R2)
        a.mov(R9, 0)  # the caller's r9 must survive
        a.exit()

    return Case("gotol and subprograms", body, tail=tail)


CASES = (
    [alu_reg_case(n, w) for n in ALU_OPS for w in (True, False)]
    + [alu_imm_case(n, w) for n in ALU_OPS for w in (True, False)]
    + [unary_case(), memory_case(), acquire_release_case(), packet_case()]
    + [atomic_case(size, kind, fetch) for size in (4, 8) for kind, fetch in ATOMICS]
    + [jump_case(c, w, reg) for c in CONDS for w in (True, False) for reg in (True, False)]
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_agrees_with_reference(kernel: object, case: Case) -> None:
    execute(kernel, case)


def test_reference_knows_the_edge_cases() -> None:
    """The reference is itself checked on the RFC's examples, independent of the kernel."""
    m = Machine(bytearray(8))
    assert m.alu(isa.BPF_DIV, True, 5, 0, 0) == 0
    assert m.alu(isa.BPF_MOD, True, 5, 0, 0) == 5
    assert m.alu(isa.BPF_DIV, True, 1 << 63, M64, 1) & M64 == 1 << 63  # INT_MIN / -1
    assert m.alu(isa.BPF_MOD, True, 1 << 63, M64, 1) & M64 == 0
    assert m.alu(isa.BPF_MOD, True, -7 & M64, 2, 1) & M64 == M64  # -7 % 2 == -1 (C)
    assert m.alu(isa.BPF_LSH, False, 1, 33, 0) & M32 == 2  # 32-bit shifts mask with 31
    assert m.alu(isa.BPF_ARSH, False, 0x80000000, 31, 0) & M32 == M32
    assert Machine.cond(isa.BPF_JSLT, False, 0xFFFFFFFF, 0, ) is True
    assert Machine.cond(isa.BPF_JLT, True, 0xFFFFFFFF, 0) is False


def test_gotol_and_subprograms(kernel: object) -> None:
    case = far_jump_case()
    insns, _ = build(case, 0)
    codes = [(i.opcode, i.src) for i in insns]
    assert codes.count((isa.BPF_JMP32 | isa.BPF_JA, 0)) == 3  # three far jumps became gotol
    assert (isa.BPF_JMP | isa.BPF_CALL, isa.BPF_PSEUDO_CALL) in codes
    assert execute(kernel, case) == (None if missing_features(insns) else 1)


def test_dsl_stack_slots() -> None:
    a = Asm()
    assert a.stack(4) == -8
    assert a.stack(16) == -24
    assert a.stack(1, align=1) == -25
    with pytest.raises(Exception, match="512-byte"):
        a.stack(500)



# ---------------------------------------------------------------------------------------------
# isa.check, the disassembler's notion of an instruction, against the verifier's

ENCODING_ERRORS = re.compile(
    r"unknown opcode|uses reserved fields|invalid atomic operand size|invalid atomic opcode"
    r"|invalid may_goto imm|BPF_ATOMIC uses invalid|unrecognized bpf_ld_imm64|invalid bpf_ld_imm64"
)


def _verdict(kernel: object, insn: isa.Instruction) -> str:
    """'' if the verifier accepts ``insn`` in a small socket filter, else its last log line."""
    from pybpf.errors import VerifierError

    syscall, uapi = kernel  # type: ignore[misc]
    setup = [isa.Instruction(0xB7, i) for i in range(10)]  # r0..r9 = 0
    setup[1] = isa.Instruction(0xBF, 1, 10)  # r1 = r10: a stack pointer for memory forms
    prog = [isa.Instruction(0xBF, 6, 1), *setup, insn, isa.Instruction(0xB7), isa.Instruction(0x95)]
    try:
        syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, isa.encode(prog)).close()
        return ""
    except VerifierError as err:
        lines = err.log.strip().splitlines()
        return lines[-2] if len(lines) > 1 else str(err)


def test_check_agrees_with_the_verifier(kernel: object) -> None:
    """Every opcode byte with typical and random fields: what isa.check rejects the verifier
    rejects; what it accepts the verifier never calls a bad encoding (it may still reject
    the program for what it does: bad memory, division by a zero immediate, ...).  The one
    exception is LLVM's callx, which no kernel implements."""
    rng = random.Random(3)
    grid = [(0, 0, 0), (2, 0, 0), (0, 1, 0), (0, 8, 0), (0, 0, 16), (0, 0, 1), (2, 0, 1),
            (0, 0, 0xE1), (0, 0, 0x100), (2, -8, 0), (0, -8, 7)]  # fmt: skip
    cases = [(code, 3, src, off, imm) for code in range(256) for src, off, imm in grid]
    for _ in range(2000):
        src = rng.choice([0, 1, 2, rng.randrange(16)])
        off = rng.choice([0, 1, 8, -8, rng.randrange(-(1 << 15), 1 << 15)])
        imm = rng.choice([0, 1, 16, 0xE1, 0xF1, 0x110, rng.randrange(-(1 << 31), 1 << 31)])
        cases.append((rng.randrange(256), rng.randrange(11), src, off, imm))
    wrong = []
    for code, dst, src, off, imm in cases:
        if code == isa.LD_IMM64:  # all pseudo sources, with and without a second immediate
            imm = rng.choice([1, 1 << 32 | 1])
            src = rng.randrange(8)
        insn = isa.Instruction(code, dst, src, off, imm)
        valid = isa.check(insn) is None
        verdict = _verdict(kernel, insn)
        if code == isa.BPF_JMP | isa.BPF_CALL | isa.BPF_X and valid:
            assert "unknown opcode 8d" in verdict
        elif valid and missing_features([insn]):  # a family this kernel's probes say it lacks
            if not ENCODING_ERRORS.search(verdict):
                wrong.append((insn, verdict))
        elif valid and ENCODING_ERRORS.search(verdict) or not valid and not verdict:
            wrong.append((insn, verdict))
    assert not wrong, wrong[:5]


# ---------------------------------------------------------------------------------------------
# random straight-line programs (with forward branches), kernel vs reference

_RANDOM_ALU = [(op, off) for op, off in ALU_OPS.values()]


@st.composite
def random_programs(draw: st.DrawFn) -> list[tuple]:
    steps = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["alu", "alu", "alu", "unary", "branch"]))
        dst, src = draw(st.integers(0, 8)), draw(st.integers(0, 8))
        is64 = draw(st.booleans())
        if kind == "alu":
            op, off = draw(st.sampled_from(_RANDOM_ALU))
            imm = draw(st.one_of(st.sampled_from(IMMS), st.integers(-(1 << 31), (1 << 31) - 1)))
            use_imm = draw(st.booleans())
            if use_imm and op in (isa.BPF_DIV, isa.BPF_MOD) and imm == 0:
                imm = 3
            if use_imm and op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH):
                imm &= 31 if not is64 else 63
            steps.append(("alu", op, off, is64, dst, src, imm if use_imm else None))
        elif kind == "unary":
            steps.append(("unary", draw(st.integers(0, 10)), dst, src))
        else:
            cond = draw(st.sampled_from(CONDS))
            imm = draw(st.one_of(st.sampled_from(IMMS), st.integers(-(1 << 31), (1 << 31) - 1)))
            steps.append(("branch", cond, is64, dst, src, draw(st.booleans()) and imm))
    return steps


def _emit_random(steps: list[tuple]) -> Callable[[Asm, Callable[..., int]], None]:
    regs = [Reg(i) for i in range(9)]

    def body(a: Asm, out: Callable[..., int]) -> None:
        for i in range(9):  # every register starts as an operand the verifier cannot see
            a.ldx(regs[i], R9, operand((i * 7 + 3) % len(EDGES)), size=8)
        for n, step in enumerate(steps):
            if step[0] == "alu":
                _, op, off, is64, dst, src, imm = step
                cls = isa.BPF_ALU64 if is64 else isa.BPF_ALU
                a._alu(op, cls, regs[dst], regs[src] if imm is None else imm)
                a.insns[-1] = a.insns[-1].with_(off=off)
            elif step[0] == "unary":
                _, which, dst, src = step
                d, s = regs[dst], regs[src]
                if which < 2:
                    (a.neg if which == 0 else a.neg32)(d)
                elif which < 5:
                    a.movsx(d, s, (8, 16, 32)[which - 2])
                elif which < 7:
                    a.movsx32(d, s, (8, 16)[which - 5])
                else:
                    kind, bits = [(a.le, 16), (a.be, 32), (a.bswap, 64), (a.le, 32)][which - 7]
                    kind(d, bits)
            else:
                _, cond, is64, dst, src, imm = step
                jump = getattr(a, cond + ("" if is64 else "32"))
                jump(regs[dst], regs[src] if imm is False else imm, f"skip{n}")
                a.xor(regs[dst], 0x5A)  # skipped or not
                a.label(f"skip{n}")
        for i in range(9):
            a.stx(R9, out(), regs[i], size=8)

    return body


@settings(max_examples=150, deadline=None)
@given(random_programs())
def test_random_programs_agree_with_reference(kernel: object, steps: list[tuple]) -> None:
    execute(kernel, Case("random program", _emit_random(steps)))
