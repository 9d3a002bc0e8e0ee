"""The text assembler: LLVM's BPF assembly syntax to instructions.

It reads what ``llvm-mc -triple=bpfel -mcpu=v4`` reads and encodes it to the
same bytes (``tests/test_isa_llvm.py`` checks every form against llvm-mc 19)::

    r0 = 1                          if r1 > 3 goto LBB0_2       call 5
    w2 += w3                        *(u32 *)(r10 - 4) = r1      exit
    r0 = (s16)r1                    lock *(u64 *)(r1 + 0) += r2
    r1 = 0x1122334455667788 ll      r0 = *(u16 *)skb[12]        gotol far

Labels end with ``:``; ``#``, ``;`` and ``//`` start a comment (``#`` only at the
start of a line or after a space, so ``call bpf_ktime_get_ns#5`` is one token).
As in LLVM, ``goto`` and conditional jumps have 16-bit offsets (beyond is an error:
write ``gotol``).  ``call NAME`` calls the label ``NAME`` (bpf-to-bpf, BPF_PSEUDO_CALL) if the file
defines it, else the helper ``NAME`` (``bpf_`` prefix optional), whose number
comes from the target kernel's BTF; ``call bpf_x#5`` and ``call 5`` are helper 5.

Extensions for what LLVM's syntax cannot say (the disassembler prints them):
``r1 = map_fd(NAME|FD) ll``, ``r1 = map_value(NAME|FD, OFF) ll``,
``r1 = btf_id(ID[, FD]) ll``, ``r1 = func(LABEL) ll``, ``r1 = map_idx(I) ll``,
``r1 = map_idx_value(I, OFF) ll`` (LD_IMM64 pseudo sources 1-6; LLVM's
``ld_pseudo r1, SRC, IMM`` is read too); ``r1 = NAME ll`` is ``map_fd(NAME)``;
``call kfunc(ID[, OFF])`` or, given a BTF, ``call kfunc(NAME)``; ``call pc+N``;
``r0 = *(u32 *)skb[r1 + 4]``; load-acquire and store-release in LLVM 20's syntax;
``.quad N`` for raw slots.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Optional

from . import isa
from .asm import link
from .errors import AsmError

if TYPE_CHECKING:
    import argparse

_NUM = r"[+-]?\s*(?:0[xX][0-9a-fA-F]+|\d+)"
_REG = r"[rw]\d+"
_IDENT = r"[A-Za-z_.$][\w.$]*"
_MEM = rf"\(\s*(r\d+)\s*(?:([+-])\s*({_NUM}))?\s*\)"  # (r1 + 8)
_PTR = r"\(\s*([us])(\d+)\s*\*\s*\)"  # (u32 *)

_SIZES = {"8": isa.BPF_B, "16": isa.BPF_H, "32": isa.BPF_W, "64": isa.BPF_DW}
_ALU_OPS = {
    "+": isa.BPF_ADD, "-": isa.BPF_SUB, "*": isa.BPF_MUL, "/": isa.BPF_DIV,
    "|": isa.BPF_OR, "&": isa.BPF_AND, "<<": isa.BPF_LSH, ">>": isa.BPF_RSH,
    "%": isa.BPF_MOD, "^": isa.BPF_XOR, "": isa.BPF_MOV, "s>>": isa.BPF_ARSH,
    "s/": isa.BPF_DIV, "s%": isa.BPF_MOD,
}  # fmt: skip
_JMP_OPS = {
    "==": isa.BPF_JEQ, "!=": isa.BPF_JNE, ">": isa.BPF_JGT, ">=": isa.BPF_JGE,
    "<": isa.BPF_JLT, "<=": isa.BPF_JLE, "s>": isa.BPF_JSGT, "s>=": isa.BPF_JSGE,
    "s<": isa.BPF_JSLT, "s<=": isa.BPF_JSLE, "&": isa.BPF_JSET,
}  # fmt: skip
_ATOMIC_OPS = {"+": isa.BPF_ADD, "|": isa.BPF_OR, "&": isa.BPF_AND, "^": isa.BPF_XOR}
_FETCH_OPS = {"add": isa.BPF_ADD, "or": isa.BPF_OR, "and": isa.BPF_AND, "xor": isa.BPF_XOR}
_PSEUDO = {
    "map_fd": isa.BPF_PSEUDO_MAP_FD, "map_value": isa.BPF_PSEUDO_MAP_VALUE,
    "btf_id": isa.BPF_PSEUDO_BTF_ID, "func": isa.BPF_PSEUDO_FUNC,
    "map_idx": isa.BPF_PSEUDO_MAP_IDX, "map_idx_value": isa.BPF_PSEUDO_MAP_IDX_VALUE,
}  # fmt: skip
# Directives clang and llvm-mc write that change nothing in a BPF .text.
_IGNORED = {".text", ".globl", ".global", ".p2align", ".type", ".size", ".file", ".section",
            ".addrsig", ".addrsig_sym", ".local", ".weak", ".hidden", ".cfi_sections"}  # fmt: skip
_MNEMONICS = {"exit", "call", "callx", "goto", "gotol", "may_goto", "if", "lock", "ld_pseudo",
              "store_release", "nop"}  # fmt: skip

_COMMENT = re.compile(r"(^|\s)[#;].*$|//.*$")
_LABEL = re.compile(rf"\s*({_IDENT})\s*:(.*)$")


def _num(text: str) -> int:
    t = text.replace(" ", "").replace("\t", "")
    neg = t.startswith("-")
    t = t.lstrip("+-")
    value = int(t, 16) if t[:2] in ("0x", "0X") else int(t, 10)
    return -value if neg else value


class _Line:
    """One source line being assembled: error messages carry its number."""

    def __init__(self, where: str, kfunc_id: Optional[Callable[[str], int]] = None) -> None:
        self.where = where
        self.kfunc_id = kfunc_id

    def error(self, message: str) -> AsmError:
        return AsmError(f"{self.where}: {message}")

    def reg(self, text: str, width: Optional[str] = None) -> int:
        index = int(text[1:])
        if index > isa.MAX_REG:
            raise self.error(f"bad register {text!r} (r0-r10, w0-w10)")
        if width is not None and text[0] != width:
            want = "64-bit r" if width == "r" else "32-bit w"
            raise self.error(f"{text}: expected a {want} register here")
        return index

    def imm32(self, text: str) -> int:
        value = _num(text)
        if not -(1 << 31) <= value < (1 << 32):
            raise self.error(f"immediate {value} does not fit in 32 bits")
        return value - (1 << 32) if value >= 1 << 31 else value

    def off16(self, text: str, what: str = "offset") -> int:
        value = _num(text)
        if not -(1 << 15) <= value < (1 << 15):
            raise self.error(f"{what} {value} does not fit in 16 bits")
        return value

    def mem(self, m: re.Match, base: int) -> tuple[int, int]:
        """Register and offset of a ``(rN +/- OFF)`` group starting at group ``base``."""
        reg = self.reg(m.group(base), "r")
        sign, off = m.group(base + 1), m.group(base + 2)
        value = 0 if off is None else self.off16(sign + off.strip().lstrip("+"), "memory offset")
        return reg, value

    def size(self, bits: str, allowed: tuple[str, ...] = ("8", "16", "32", "64")) -> int:
        if bits not in allowed:
            raise self.error(f"no {bits}-bit access here ({', '.join(allowed)})")
        return _SIZES[bits]


Handler = Callable[[_Line, re.Match], isa.Instruction]
_PATTERNS: list[tuple[re.Pattern, Handler]] = []


def _form(pattern: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _PATTERNS.append((re.compile(pattern), fn))
        return fn

    return register


def _target(insn: isa.Instruction, text: str, ln: _Line, field: str) -> isa.Instruction:
    text = text.strip()
    if re.fullmatch(_NUM, text):
        if field == "off":
            return insn.with_(off=ln.off16(text, "jump offset"))
        return insn.with_(imm=ln.imm32(text))
    if not re.fullmatch(_IDENT, text):
        raise ln.error(f"bad jump target {text!r}")
    return insn.with_(label=text)


@_form(r"exit")
def _exit(ln: _Line, m: re.Match) -> isa.Instruction:
    return isa.Instruction(isa.BPF_JMP | isa.BPF_EXIT)


@_form(r"(goto|gotol|may_goto)\s+(\S.*)")
def _goto(ln: _Line, m: re.Match) -> isa.Instruction:
    op = m.group(1)
    if op == "goto":
        return _target(isa.Instruction(isa.BPF_JMP | isa.BPF_JA), m.group(2), ln, "off")
    if op == "gotol":
        return _target(isa.Instruction(isa.BPF_JMP32 | isa.BPF_JA), m.group(2), ln, "imm")
    return _target(isa.Instruction(isa.BPF_JMP | isa.BPF_JCOND), m.group(2), ln, "off")


@_form(rf"if\s+({_REG})\s*(s>=|s<=|s>|s<|==|!=|>=|<=|>|<|&)\s*({_REG}|{_NUM})\s+goto\s+(\S.*)")
def _cond(ln: _Line, m: re.Match) -> isa.Instruction:
    width = m.group(1)[0]
    cls = isa.BPF_JMP if width == "r" else isa.BPF_JMP32
    dst, rhs = ln.reg(m.group(1)), m.group(3)
    op = cls | _JMP_OPS[m.group(2)]
    if rhs[0] in "rw":
        insn = isa.Instruction(op | isa.BPF_X, dst, ln.reg(rhs, width))
    else:
        insn = isa.Instruction(op | isa.BPF_K, dst, 0, 0, ln.imm32(rhs))
    return _target(insn, m.group(4), ln, "off")


@_form(r"call\s+(\S.*)")
def _call(ln: _Line, m: re.Match) -> isa.Instruction:
    arg = m.group(1).strip()
    code = isa.BPF_JMP | isa.BPF_CALL
    if re.fullmatch(_NUM, arg):
        return isa.Instruction(code, imm=ln.imm32(arg))
    pc = re.fullmatch(rf"pc\s*({_NUM})", arg)
    if pc:
        return isa.Instruction(code, 0, isa.BPF_PSEUDO_CALL, imm=ln.imm32(pc.group(1)))
    kf = re.fullmatch(rf"kfunc\(\s*(?:{_IDENT}#)?({_NUM})\s*(?:,\s*({_NUM})\s*)?\)", arg)
    if kf:
        off = 0 if kf.group(2) is None else ln.off16(kf.group(2))
        return isa.Instruction(code, 0, isa.BPF_PSEUDO_KFUNC_CALL, off, ln.imm32(kf.group(1)))
    by_name = re.fullmatch(rf"kfunc\(\s*({_IDENT})\s*\)", arg)
    if by_name:  # a vmlinux kfunc by name: its BTF FUNC id, from the target BTF
        if ln.kfunc_id is None:
            raise ln.error(f"kfunc {by_name.group(1)}: names need a BTF (or kfunc(ID))")
        try:
            btf_id = ln.kfunc_id(by_name.group(1))
        except KeyError:
            raise ln.error(f"no kernel function {by_name.group(1)!r} in the BTF") from None
        return isa.Instruction(code, 0, isa.BPF_PSEUDO_KFUNC_CALL, 0, btf_id)
    named = re.fullmatch(rf"({_IDENT})#({_NUM})", arg)
    if named:
        return isa.Instruction(code, imm=ln.imm32(named.group(2)))
    if re.fullmatch(_IDENT, arg):
        # A label of this file (bpf-to-bpf) or a helper; decided once all labels are known.
        return isa.Instruction(code, 0, isa.BPF_PSEUDO_CALL, label=arg)
    raise ln.error(f"bad call target {arg!r}")


@_form(rf"callx\s+({_REG})")
def _callx(ln: _Line, m: re.Match) -> isa.Instruction:
    return isa.Instruction(isa.BPF_JMP | isa.BPF_CALL | isa.BPF_X, ln.reg(m.group(1), "r"))


@_form(rf"lock\s+\*\s*{_PTR}\s*{_MEM}\s*([+|&^])=\s*({_REG})")
def _lock(ln: _Line, m: re.Match) -> isa.Instruction:
    if m.group(1) != "u":
        raise ln.error("atomic operations take (u32 *) or (u64 *)")
    size = ln.size(m.group(2), ("32", "64"))
    dst, off = ln.mem(m, 3)
    # LLVM also reads the older `lock *(u32 *)(r1 + 0) += r2` (XADDW), so r is fine for 32
    src = ln.reg(m.group(7), None if size == isa.BPF_W else "r")
    code = isa.BPF_STX | isa.BPF_ATOMIC | size
    return isa.Instruction(code, dst, src, off, _ATOMIC_OPS[m.group(6)])


@_form(rf"({_REG})\s*=\s*atomic_fetch_(add|and|or|xor)\(\s*{_PTR}\s*{_MEM}\s*,\s*({_REG})\s*\)")
def _fetch(ln: _Line, m: re.Match) -> isa.Instruction:
    size = ln.size(m.group(4), ("32", "64"))
    width = "w" if size == isa.BPF_W else "r"
    dst, off = ln.mem(m, 5)
    src = ln.reg(m.group(8), width)
    if ln.reg(m.group(1), width) != src:
        raise ln.error("atomic_fetch_*: the result register must be the operand register")
    code = isa.BPF_STX | isa.BPF_ATOMIC | size
    return isa.Instruction(code, dst, src, off, _FETCH_OPS[m.group(2)] | isa.BPF_FETCH)


_MEM_IN = rf"(r\d+)\s*(?:([+-])\s*({_NUM}))?"  # r1 + 8, no parentheses


@_form(rf"({_REG})\s*=\s*(xchg_64|xchg32_32)\(\s*{_MEM_IN}\s*,\s*({_REG})\s*\)")
def _xchg(ln: _Line, m: re.Match) -> isa.Instruction:
    width = "r" if m.group(2) == "xchg_64" else "w"
    dst, off = ln.mem(m, 3)
    src = ln.reg(m.group(6), width)
    if ln.reg(m.group(1), width) != src:
        raise ln.error("xchg: the result register must be the operand register")
    code = isa.BPF_STX | isa.BPF_ATOMIC | (isa.BPF_DW if width == "r" else isa.BPF_W)
    return isa.Instruction(code, dst, src, off, isa.BPF_XCHG)


@_form(rf"({_REG})\s*=\s*(cmpxchg_64|cmpxchg32_32)\(\s*{_MEM_IN}\s*,\s*({_REG})\s*,\s*({_REG})\s*\)")
def _cmpxchg(ln: _Line, m: re.Match) -> isa.Instruction:
    width = "r" if m.group(2) == "cmpxchg_64" else "w"
    if ln.reg(m.group(1), width) != 0 or ln.reg(m.group(6), width) != 0:
        raise ln.error(f"cmpxchg compares with and returns {width}0")
    dst, off = ln.mem(m, 3)
    code = isa.BPF_STX | isa.BPF_ATOMIC | (isa.BPF_DW if width == "r" else isa.BPF_W)
    return isa.Instruction(code, dst, ln.reg(m.group(7), width), off, isa.BPF_CMPXCHG)


@_form(rf"({_REG})\s*=\s*load_acquire\(\s*{_PTR}\s*{_MEM}\s*\)")
def _load_acquire(ln: _Line, m: re.Match) -> isa.Instruction:
    size = ln.size(m.group(3))
    src, off = ln.mem(m, 4)
    dst = ln.reg(m.group(1), "r" if size == isa.BPF_DW else None)
    return isa.Instruction(isa.BPF_STX | isa.BPF_ATOMIC | size, dst, src, off, isa.BPF_LOAD_ACQ)


@_form(rf"store_release\(\s*{_PTR}\s*{_MEM}\s*,\s*({_REG})\s*\)")
def _store_release(ln: _Line, m: re.Match) -> isa.Instruction:
    size = ln.size(m.group(2))
    dst, off = ln.mem(m, 3)
    src = ln.reg(m.group(6), "r" if size == isa.BPF_DW else None)
    return isa.Instruction(isa.BPF_STX | isa.BPF_ATOMIC | size, dst, src, off, isa.BPF_STORE_REL)


@_form(rf"\*\s*{_PTR}\s*{_MEM}\s*=\s*({_REG}|{_NUM})")
def _store(ln: _Line, m: re.Match) -> isa.Instruction:
    if m.group(1) != "u":
        raise ln.error("stores take (u8 *), (u16 *), (u32 *) or (u64 *)")
    size = ln.size(m.group(2))
    dst, off = ln.mem(m, 3)
    value = m.group(6)
    if value[0] in "rw":
        src = ln.reg(value, "r" if size == isa.BPF_DW else None)
        return isa.Instruction(isa.BPF_STX | isa.BPF_MEM | size, dst, src, off)
    return isa.Instruction(isa.BPF_ST | isa.BPF_MEM | size, dst, 0, off, ln.imm32(value))


@_form(rf"({_REG})\s*=\s*\*\s*{_PTR}\s*skb\[\s*(?:({_NUM})|(r\d+)\s*(?:([+-])\s*({_NUM}))?)\s*\]")
def _ld_skb(ln: _Line, m: re.Match) -> isa.Instruction:
    if m.group(1) != "r0" or m.group(2) != "u":
        raise ln.error("legacy packet loads are r0 = *(u8|u16|u32 *)skb[...]")
    size = ln.size(m.group(3), ("8", "16", "32"))
    if m.group(4) is not None:
        return isa.Instruction(isa.BPF_LD | isa.BPF_ABS | size, imm=ln.imm32(m.group(4)))
    src = ln.reg(m.group(5), "r")
    imm = 0 if m.group(7) is None else ln.imm32(m.group(6) + m.group(7).strip().lstrip("+"))
    return isa.Instruction(isa.BPF_LD | isa.BPF_IND | size, 0, src, 0, imm)


@_form(rf"({_REG})\s*=\s*\*\s*{_PTR}\s*{_MEM}")
def _load(ln: _Line, m: re.Match) -> isa.Instruction:
    signed = m.group(2) == "s"
    size = ln.size(m.group(3), ("8", "16", "32") if signed else ("8", "16", "32", "64"))
    src, off = ln.mem(m, 4)
    dst = ln.reg(m.group(1), "r" if signed or size == isa.BPF_DW else None)
    mode = isa.BPF_MEMSX if signed else isa.BPF_MEM
    return isa.Instruction(isa.BPF_LDX | mode | size, dst, src, off)


def _ld_imm64(ln: _Line, dst: int, src: int, imm: int, label: Optional[str] = None,
              map_name: Optional[str] = None) -> isa.Instruction:  # fmt: skip
    if not -(1 << 63) <= imm < (1 << 64):
        raise ln.error(f"immediate {imm} does not fit in 64 bits")
    return isa.Instruction(isa.LD_IMM64, dst, src, 0, imm, label=label, map=map_name)


@_form(rf"ld_pseudo\s+({_REG})\s*,\s*({_NUM})\s*,\s*({_NUM})")
def _ld_pseudo(ln: _Line, m: re.Match) -> isa.Instruction:
    src = _num(m.group(2))
    if not 0 <= src <= 15:
        raise ln.error(f"ld_pseudo: source {src} is not a 4-bit register field")
    imm = ln.imm32(m.group(3)) & 0xFFFFFFFF
    return _ld_imm64(ln, ln.reg(m.group(1), "r"), src, imm)


@_form(rf"({_REG})\s*=\s*(\w+)\(\s*([^,()\s]+)\s*(?:,\s*({_NUM})\s*)?\)\s*ll")
def _ld_pseudo_named(ln: _Line, m: re.Match) -> isa.Instruction:
    kind = m.group(2)
    src = _PSEUDO.get(kind)
    if src is None:
        raise ln.error(f"unknown LD_IMM64 source {kind!r} ({', '.join(_PSEUDO)})")
    dst, ref, second = ln.reg(m.group(1), "r"), m.group(3), m.group(4)
    hi = 0 if second is None else ln.imm32(second) & 0xFFFFFFFF
    if src == isa.BPF_PSEUDO_FUNC:
        pc = re.fullmatch(rf"pc\s*({_NUM})", ref)
        if pc:
            return _ld_imm64(ln, dst, src, hi << 32 | ln.imm32(pc.group(1)) & 0xFFFFFFFF)
        if not re.fullmatch(_IDENT, ref) or second is not None:
            raise ln.error("func() takes one label")
        return _ld_imm64(ln, dst, src, 0, label=ref)
    if re.fullmatch(_NUM, ref):
        return _ld_imm64(ln, dst, src, hi << 32 | ln.imm32(ref) & 0xFFFFFFFF)
    if src in (isa.BPF_PSEUDO_MAP_FD, isa.BPF_PSEUDO_MAP_VALUE) and re.fullmatch(_IDENT, ref):
        return _ld_imm64(ln, dst, src, hi << 32, map_name=ref)
    raise ln.error(f"{kind}() takes a number" + (" or a map name" if src <= 2 else ""))


@_form(rf"({_REG})\s*=\s*(?:({_NUM})|({_IDENT}))\s+ll")
def _ld_imm(ln: _Line, m: re.Match) -> isa.Instruction:
    dst = ln.reg(m.group(1), "r")
    if m.group(2) is not None:
        return _ld_imm64(ln, dst, 0, _num(m.group(2)))
    if re.fullmatch(_REG, m.group(3)):
        raise ln.error(f"LD_IMM64 loads a number or a map, not the register {m.group(3)}")
    return _ld_imm64(ln, dst, isa.BPF_PSEUDO_MAP_FD, 0, map_name=m.group(3))


@_form(rf"({_REG})\s*=\s*-\s*({_REG})")
def _neg(ln: _Line, m: re.Match) -> isa.Instruction:
    width = m.group(1)[0]
    dst = ln.reg(m.group(1))
    if ln.reg(m.group(2), width) != dst:
        raise ln.error("neg: source and destination must be the same register")
    return isa.Instruction((isa.BPF_ALU64 if width == "r" else isa.BPF_ALU) | isa.BPF_NEG, dst)


@_form(rf"({_REG})\s*=\s*\(\s*s(\d+)\s*\)\s*({_REG})")
def _movsx(ln: _Line, m: re.Match) -> isa.Instruction:
    width = m.group(1)[0]
    bits = int(m.group(2))
    if bits not in ((8, 16, 32) if width == "r" else (8, 16)):
        raise ln.error(f"no sign extension from {bits} bits into a {width} register")
    cls = isa.BPF_ALU64 if width == "r" else isa.BPF_ALU
    code = cls | isa.BPF_MOV | isa.BPF_X
    return isa.Instruction(code, ln.reg(m.group(1)), ln.reg(m.group(3), width), bits)


@_form(rf"({_REG})\s*=\s*(le|be|bswap)(\d+)\s+({_REG})")
def _end(ln: _Line, m: re.Match) -> isa.Instruction:
    dst = ln.reg(m.group(1))
    if ln.reg(m.group(4)) != dst:
        raise ln.error("byte swaps work in place: the same register on both sides")
    bits = int(m.group(3))
    if bits not in (16, 32, 64):
        raise ln.error(f"byte swap of {bits} bits (16, 32 or 64)")
    code = {"le": isa.BPF_ALU | isa.BPF_TO_LE, "be": isa.BPF_ALU | isa.BPF_TO_BE,
            "bswap": isa.BPF_ALU64 | isa.BPF_TO_LE}[m.group(2)]  # fmt: skip
    return isa.Instruction(code | isa.BPF_END, dst, 0, 0, bits)


@_form(rf"({_REG})\s*=\s*addr_space_cast\(\s*({_REG})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\)")
def _addr_space_cast(ln: _Line, m: re.Match) -> isa.Instruction:
    dst_as, src_as = _num(m.group(3)), _num(m.group(4))
    if not (0 <= dst_as < 1 << 16 and 0 <= src_as < 1 << 16):
        raise ln.error("addr_space_cast: address spaces are 16-bit")
    code = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X
    imm = dst_as << 16 | src_as
    dst, src = ln.reg(m.group(1), "r"), ln.reg(m.group(2), "r")
    return isa.Instruction(code, dst, src, isa.BPF_ADDR_SPACE_CAST, imm)


@_form(rf"({_REG})\s*(s>>|s/|s%|<<|>>|[-+*/%|&^]|)=\s*({_REG}|{_NUM})")
def _alu(ln: _Line, m: re.Match) -> isa.Instruction:
    width = m.group(1)[0]
    cls = isa.BPF_ALU64 if width == "r" else isa.BPF_ALU
    sym = m.group(2)
    code = cls | _ALU_OPS[sym]
    off = isa.BPF_SIGNED_DIV_OFF if sym in ("s/", "s%") else 0
    dst, rhs = ln.reg(m.group(1)), m.group(3)
    if rhs[0] in "rw":
        return isa.Instruction(code | isa.BPF_X, dst, ln.reg(rhs, width), off)
    return isa.Instruction(code | isa.BPF_K, dst, 0, off, ln.imm32(rhs))


@_form(rf"\.(?:quad|8byte|dword)\s+({_NUM})")
def _quad(ln: _Line, m: re.Match) -> isa.Instruction:
    value = _num(m.group(1))
    if not -(1 << 63) <= value < (1 << 64):
        raise ln.error(f".quad {value} does not fit in 64 bits")
    return isa.raw((value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))


# The most frequent forms first (each pattern only matches its own form, so order is speed).
_FIRST = [_alu, _load, _store, _cond, _call, _exit, _goto]
_PATTERNS.sort(key=lambda p: _FIRST.index(p[1]) if p[1] in _FIRST else len(_FIRST))


def _unknown(ln: _Line, text: str) -> AsmError:
    bad = re.search(r"\b([rw])(\d+)\b", text)
    if bad and int(bad.group(2)) > isa.MAX_REG:
        return ln.error(f"bad register {bad.group(0)!r} (r0-r10, w0-w10)")
    word = re.match(r"[A-Za-z_.$][\w.$]*", text)
    if word and not re.fullmatch(_REG, word.group(0)) and word.group(0) not in _MNEMONICS:
        return ln.error(f"unknown mnemonic {word.group(0)!r}")
    return ln.error(f"cannot parse {text!r}")


def parse(
    text: str, filename: str = "<input>", kfunc_id: Optional[Callable[[str], int]] = None
) -> tuple[list[isa.Instruction], dict[str, int], list[int]]:
    """Instructions, labels (label -> instruction index) and each instruction's line
    number, labels still symbolic.  Errors name ``filename`` and the line.  ``kfunc_id``
    maps a kernel function's name to its BTF id (raises KeyError if unknown)."""
    insns: list[isa.Instruction] = []
    lines: list[int] = []
    labels: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        ln = _Line(f"{filename}:{number}", kfunc_id)
        body = _COMMENT.sub("", line).strip()
        while True:
            lab = _LABEL.match(body)
            if lab is None:
                break
            name = lab.group(1)
            if name in labels:
                raise ln.error(f"label {name!r} defined twice")
            labels[name] = len(insns)
            body = lab.group(2).strip()
        if not body:
            continue
        if body.startswith(".") and body.split()[0] in _IGNORED:
            continue
        for pattern, handler in _PATTERNS:
            m = pattern.fullmatch(body)
            if m is not None:
                insns.append(handler(ln, m))
                lines.append(number)
                break
        else:
            raise _unknown(ln, body)
    # `call NAME`: a label of this file is a bpf-to-bpf call, anything else a helper.
    for i, insn in enumerate(insns):
        if insn.opcode == isa.BPF_JMP | isa.BPF_CALL and insn.label is not None:
            if insn.label not in labels:
                name = insn.label[4:] if insn.label.startswith("bpf_") else insn.label
                insns[i] = isa.Instruction(insn.opcode, helper=name)
    return insns, labels, lines


def assemble(
    text: str, filename: str = "<input>", kfunc_id: Optional[Callable[[str], int]] = None
) -> list[isa.Instruction]:
    """Assemble ``text``: labels resolved, helper calls by name and maps by name still
    symbolic (:func:`pybpf.object.prepare` and the loader resolve them); kfuncs by name
    need ``kfunc_id`` (e.g. :func:`pybpf.disasm.kfunc_ids` of a BTF)."""
    insns, labels, lines = parse(text, filename, kfunc_id)
    return link(insns, labels, where=lambda i: f"{filename}:{lines[i]}: ", relax=False)


def to_bytes(
    insns: list[isa.Instruction], helper_number: Optional[Callable[[str], int]] = None
) -> bytes:
    """Raw instruction bytes; helper names become numbers through ``helper_number``
    (e.g. a target BTF's ``enum bpf_func_id``), map names are an error."""
    out = []
    for insn in insns:
        if insn.helper is not None:
            if helper_number is None:
                raise AsmError(f"call {insn.helper}: helper names need a BTF (or call N)")
            insn = insn.with_(imm=helper_number(insn.helper))
        if insn.map is not None:
            raise AsmError(
                f"map {insn.map!r} by name cannot be written as raw bytes: use map_fd(N)"
            )
        out.append(insn.encode())
    return b"".join(out)


def parser() -> argparse.ArgumentParser:
    """The parser of ``pybpf asm``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="pybpf asm",
        description="Assemble LLVM-syntax BPF assembly into raw instructions (8 bytes a slot).",
    )
    p.add_argument("file", help="assembly source ('-': stdin)")
    p.add_argument("-o", "--output", metavar="OUT",
                        help="write the raw bytes here ('-': stdout)")  # fmt: skip
    p.add_argument(
        "--btf", metavar="FILE", help="helper numbers for `call NAME` (default: running kernel)"
    )
    return p


def main(argv: list[str]) -> int:
    """``pybpf asm FILE.s [-o OUT]``: assemble; raw bytes to OUT, else a hex listing."""
    import sys

    from .disasm import btf_namers, format_insn, helper_numbers, kfunc_ids, load_btf, read_input

    args = parser().parse_args(argv)
    raw = read_input(args.file)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise AsmError(f"{args.file}: not a text file") from None
    btf: list[object] = []  # loaded on first need: helper numbers and kfunc ids come from it

    def target() -> object:
        if not btf:
            btf.append(load_btf(args.btf, required=True))
        return btf[0]

    insns = assemble(
        text, "<stdin>" if args.file == "-" else args.file, lambda n: kfunc_ids(target())[n]
    )
    numbers: Optional[dict[str, int]] = None
    if any(i.helper is not None for i in insns):
        numbers = helper_numbers(target())

    def number(name: str) -> int:
        assert numbers is not None
        if name not in numbers:
            raise AsmError(f"helper bpf_{name}() does not exist on the target kernel")
        return numbers[name]

    data = to_bytes(insns, number)
    if args.output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    if args.output:
        try:
            with open(args.output, "wb") as f:
                f.write(data)
        except OSError as err:
            raise AsmError(f"cannot write {args.output}: {err.strerror}") from None
        return 0
    slot = 0
    for insn in insns:
        if insn.helper is not None:
            insn = insn.with_(imm=number(insn.helper))
        chunk = insn.encode()
        words = [chunk[i : i + 8] for i in range(0, len(chunk), 8)]
        namers = btf_namers(btf[0]) if btf else (None, None)
        text_of = format_insn(insn, None, *namers).split("\n")[0]
        for k, word in enumerate(words):
            listing = text_of if k == 0 else ""
            sys.stdout.write(f"{slot + k:5}: {word.hex(' ')}  {listing}".rstrip() + "\n")
        slot += len(words)
    return 0
