"""The disassembler: instructions back to LLVM's BPF assembly syntax.

Every instruction LLVM 19 can write prints exactly as ``llvm-mc -mcpu=v4
--disassemble`` prints it (``r0 = *(s8 *)(r1 - 2)``, ``lock *(u64 *)(r1 + 0)
+= r2``, ``if w1 s> -1 goto +0``), except that jump and call targets inside
the program become labels.  What LLVM has no syntax for gets a small
extension that :mod:`pybpf.asm_text` reads back (docs in that module):
``r1 = map_fd(start) ll``, ``r1 = map_value(.rodata, 8) ll``,
``call kfunc(1234)``, ``call pc+3``; and bytes that are no instruction print as
``.quad 0x...``.  So ``assemble(disassemble(b)) == b`` for any bytes ``b``.

A target BTF, when given, names helpers (``call bpf_ktime_get_ns#5``) and
kfuncs; a :class:`~pybpf.isa.Instruction` carrying a symbolic map, helper or
CO-RE access shows it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from . import isa
from .ints import s32 as _s32

if TYPE_CHECKING:
    import argparse

ALU_SYMBOLS = {
    isa.BPF_ADD: "+=", isa.BPF_SUB: "-=", isa.BPF_MUL: "*=", isa.BPF_DIV: "/=",
    isa.BPF_OR: "|=", isa.BPF_AND: "&=", isa.BPF_LSH: "<<=", isa.BPF_RSH: ">>=",
    isa.BPF_MOD: "%=", isa.BPF_XOR: "^=", isa.BPF_MOV: "=", isa.BPF_ARSH: "s>>=",
}  # fmt: skip
JMP_SYMBOLS = {
    isa.BPF_JEQ: "==", isa.BPF_JNE: "!=", isa.BPF_JGT: ">", isa.BPF_JGE: ">=",
    isa.BPF_JLT: "<", isa.BPF_JLE: "<=", isa.BPF_JSGT: "s>", isa.BPF_JSGE: "s>=",
    isa.BPF_JSLT: "s<", isa.BPF_JSLE: "s<=", isa.BPF_JSET: "&",
}  # fmt: skip
ATOMIC_SYMBOLS = {isa.BPF_ADD: "+=", isa.BPF_OR: "|=", isa.BPF_AND: "&=", isa.BPF_XOR: "^="}
ATOMIC_NAMES = {isa.BPF_ADD: "add", isa.BPF_OR: "or", isa.BPF_AND: "and", isa.BPF_XOR: "xor"}
SIZE_NAMES = {isa.BPF_B: "8", isa.BPF_H: "16", isa.BPF_W: "32", isa.BPF_DW: "64"}
# LD_IMM64 pseudo sources (src_reg) -> the extension syntax's function name.
PSEUDO_NAMES = {
    isa.BPF_PSEUDO_MAP_FD: "map_fd", isa.BPF_PSEUDO_MAP_VALUE: "map_value",
    isa.BPF_PSEUDO_BTF_ID: "btf_id", isa.BPF_PSEUDO_FUNC: "func",
    isa.BPF_PSEUDO_MAP_IDX: "map_idx", isa.BPF_PSEUDO_MAP_IDX_VALUE: "map_idx_value",
}  # fmt: skip

Namer = Callable[[int], Optional[str]]


def _s64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >> 63 else value


def _rel(delta: int) -> str:
    return f"+{delta}" if delta >= 0 else str(delta)


def _mem(reg: int, off: int) -> str:
    return f"r{reg} + {off}" if off >= 0 else f"r{reg} - {-off}"


def jump_delta(insn: isa.Instruction) -> Optional[int]:
    """The slot delta a jump, pseudo call or ``func`` reference points to (from the next
    slot), or None if ``insn`` has no code target."""
    code, cls = insn.opcode, insn.opcode & 0x07
    if code == isa.LD_IMM64:
        return _s32(insn.imm) if insn.src == isa.BPF_PSEUDO_FUNC and insn.imm >> 32 == 0 else None
    if cls == isa.BPF_JMP32:
        op = code & 0xF0
        return _s32(insn.imm) if op == isa.BPF_JA else insn.off
    if cls != isa.BPF_JMP:
        return None
    op = code & 0xF0
    if op == isa.BPF_CALL:
        pseudo = insn.src == isa.BPF_PSEUDO_CALL and not code & isa.BPF_X
        return _s32(insn.imm) if pseudo else None
    if op == isa.BPF_EXIT:
        return None
    return insn.off


def format_insn(
    insn: isa.Instruction,
    target: Optional[str] = None,
    helper_name: Optional[Namer] = None,
    kfunc_name: Optional[Namer] = None,
) -> str:
    """One instruction in LLVM syntax; ``target`` replaces a jump's numeric offset with a label.

    An instruction :func:`pybpf.isa.check` rejects prints as ``.quad`` data (LD_IMM64 as
    two)."""
    if isa.check(insn) is not None:
        words = struct.unpack(f"<{insn.slots}Q", insn.encode())
        return "\n".join(f".quad {v:#018x}" for v in words)
    code, dst, src, off = insn.opcode, insn.dst, insn.src, insn.off
    cls, op, x = code & 0x07, code & 0xF0, code & isa.BPF_X
    imm = insn.imm if code == isa.LD_IMM64 else _s32(insn.imm)
    delta = jump_delta(insn)
    where = target if target is not None else (None if delta is None else _rel(delta))
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        r = "r" if cls == isa.BPF_ALU64 else "w"
        d, s = f"{r}{dst}", f"{r}{src}"
        if op == isa.BPF_NEG:
            return f"{d} = -{d}"
        if op == isa.BPF_END:
            kind = "bswap" if cls == isa.BPF_ALU64 else ("be" if x else "le")
            return f"r{dst} = {kind}{imm} r{dst}"
        if op == isa.BPF_MOV and x and off == isa.BPF_ADDR_SPACE_CAST and cls == isa.BPF_ALU64:
            u = insn.imm & 0xFFFFFFFF
            return f"{d} = addr_space_cast({s}, {u >> 16}, {u & 0xFFFF})"
        if op == isa.BPF_MOV and x and off:
            return f"{d} = (s{off}){s}"
        sym = ALU_SYMBOLS[op]
        if off:  # signed division and modulo
            sym = "s" + sym
        return f"{d} {sym} {s if x else imm}"
    if cls in (isa.BPF_JMP, isa.BPF_JMP32):
        if op == isa.BPF_JA:
            return f"goto {where}" if cls == isa.BPF_JMP else f"gotol {where}"
        if op in JMP_SYMBOLS:
            r = "r" if cls == isa.BPF_JMP else "w"
            rhs = f"{r}{src}" if x else str(imm)
            return f"if {r}{dst} {JMP_SYMBOLS[op]} {rhs} goto {where}"
        if op == isa.BPF_CALL:
            if x:
                return f"callx r{dst}"
            if src == isa.BPF_PSEUDO_CALL:
                return f"call {target}" if target is not None else f"call pc{_rel(imm)}"
            if src == isa.BPF_PSEUDO_KFUNC_CALL:
                name = kfunc_name(imm) if kfunc_name else None
                ref = f"{name}#{imm}" if name else str(imm)
                return f"call kfunc({ref})" if off == 0 else f"call kfunc({ref}, {off})"
            if insn.helper is not None:
                named = f"call bpf_{insn.helper}"
                return named if insn.imm == 0 else f"{named}#{imm}"
            name = helper_name(imm) if helper_name else None
            return f"call {name}#{imm}" if name else f"call {imm}"
        if op == isa.BPF_EXIT:
            return "exit"
        return f"may_goto {where}"
    mode, size = code & 0xE0, code & 0x18
    bits = SIZE_NAMES[size]
    if cls == isa.BPF_LD:
        if code == isa.LD_IMM64:
            return _format_ld_imm64(insn, target)
        if mode == isa.BPF_ABS:
            return f"r0 = *(u{bits} *)skb[{imm}]"
        index = f"r{src}" if imm == 0 else f"{_mem(src, imm)}"
        return f"r0 = *(u{bits} *)skb[{index}]"
    w = "w" if size != isa.BPF_DW else "r"
    if cls == isa.BPF_LDX:
        if mode == isa.BPF_MEMSX:
            return f"r{dst} = *(s{bits} *)({_mem(src, off)})"
        return f"{w}{dst} = *(u{bits} *)({_mem(src, off)})"
    if cls == isa.BPF_ST:
        return f"*(u{bits} *)({_mem(dst, off)}) = {imm}"
    if mode == isa.BPF_MEM:
        return f"*(u{bits} *)({_mem(dst, off)}) = {w}{src}"
    # BPF_STX | BPF_ATOMIC
    if imm == isa.BPF_LOAD_ACQ:  # dst is the result, src the address
        return f"{w}{dst} = load_acquire((u{bits} *)({_mem(src, off)}))"
    ptr = f"(u{bits} *)({_mem(dst, off)})"
    if imm == isa.BPF_STORE_REL:
        return f"store_release({ptr}, {w}{src})"
    if imm == isa.BPF_XCHG:
        return f"{w}{src} = xchg{'32_32' if w == 'w' else '_64'}({_mem(dst, off)}, {w}{src})"
    if imm == isa.BPF_CMPXCHG:
        name = "cmpxchg32_32" if w == "w" else "cmpxchg_64"
        return f"{w}0 = {name}({_mem(dst, off)}, {w}0, {w}{src})"
    if imm & isa.BPF_FETCH:
        return f"{w}{src} = atomic_fetch_{ATOMIC_NAMES[imm & ~isa.BPF_FETCH]}({ptr}, {w}{src})"
    return f"lock *{ptr} {ATOMIC_SYMBOLS[imm]} {w}{src}"


def _format_ld_imm64(insn: isa.Instruction, target: Optional[str]) -> str:
    dst, src = insn.dst, insn.src
    lo, hi = _s32(insn.imm), (insn.imm >> 32) & 0xFFFFFFFF
    if src == 0:
        return f"r{dst} = {_s64(insn.imm)} ll"
    name = PSEUDO_NAMES[src]
    if src == isa.BPF_PSEUDO_FUNC and target is not None:
        return f"r{dst} = func({target}) ll"
    ref: Union[str, int] = insn.map if insn.map is not None else lo
    if src == isa.BPF_PSEUDO_FUNC:
        ref = f"pc{_rel(lo)}"
    if hi or src in (isa.BPF_PSEUDO_MAP_VALUE, isa.BPF_PSEUDO_MAP_IDX_VALUE):
        return f"r{dst} = {name}({ref}, {hi}) ll"
    return f"r{dst} = {name}({ref}) ll"


# ---------------------------------------------------------------------------
def disassemble(
    program: Union[bytes, Iterable[isa.Instruction]],
    helper_name: Optional[Namer] = None,
    kfunc_name: Optional[Namer] = None,
    annotate: Optional[Callable[[int, isa.Instruction], str]] = None,
    indent: str = "\t",
) -> str:
    """Text for a whole program (raw bytes or instructions), with labels.

    Jump targets become ``LBB<slot>:`` labels and bpf-to-bpf call / ``func``
    targets ``sub_<slot>:``; a target outside the program, or inside an
    LD_IMM64, stays a number.  ``annotate(slot, insn)`` may add a ``# comment``."""
    if isinstance(program, (bytes, bytearray)):
        insns = isa.decode_all(bytes(program))
    else:
        insns = list(program)
    starts: dict[int, isa.Instruction] = {}
    slot = 0
    for insn in insns:
        starts[slot] = insn
        slot += insn.slots
    end = slot
    names: dict[int, str] = {}
    targets: dict[int, int] = {}
    for at, insn in starts.items():
        if isa.check(insn) is not None:
            continue
        delta = jump_delta(insn)
        if delta is None:
            continue
        dest = at + 1 + delta
        if dest == end or dest in starts:
            targets[at] = dest
            is_sub = insn.opcode == isa.LD_IMM64 or insn.opcode & 0xF0 == isa.BPF_CALL
            if is_sub:
                names[dest] = f"sub_{dest}"
            else:
                names.setdefault(dest, f"LBB{dest}")
    lines: list[str] = []
    for at, insn in starts.items():
        if at in names:
            lines.append(f"{names[at]}:")
        dest = targets.get(at)
        text = format_insn(insn, None if dest is None else names[dest], helper_name, kfunc_name)
        note = annotate(at, insn) if annotate is not None else ""
        for i, part in enumerate(text.split("\n")):
            tail = f"  # {note}" if note and i == 0 else ""
            lines.append(f"{indent}{part}{tail}")
    if end in names:
        lines.append(f"{names[end]}:")
    return "\n".join(lines) + ("\n" if lines else "")


def btf_namers(btf: Any) -> tuple[Namer, Namer]:
    """Helper and kfunc namers from a (target) BTF: ``enum bpf_func_id`` and FUNC ids."""
    from .btf import BTF_KIND_ENUM, BTF_KIND_FUNC

    helpers: Optional[dict[int, str]] = None

    def helper(num: int) -> Optional[str]:
        nonlocal helpers
        if helpers is None:
            helpers = {}
            ids = btf.find("bpf_func_id", BTF_KIND_ENUM)
            if ids:
                for v in btf.type(ids[0]).values:
                    if v.name.startswith("BPF_FUNC_") and v.name != "BPF_FUNC_unspec":
                        helpers.setdefault(v.value, "bpf_" + v.name[9:])
        return helpers.get(num)

    def kfunc(type_id: int) -> Optional[str]:
        try:
            t = btf.type(type_id)
        except Exception:
            return None
        return t.name if t.kind == BTF_KIND_FUNC and t.name else None

    return helper, kfunc


def helper_numbers(btf: Any) -> dict[str, int]:
    """Helper name (without ``bpf_``) -> number, from a BTF's ``enum bpf_func_id``."""
    from .btf import BTF_KIND_ENUM

    ids = btf.find("bpf_func_id", BTF_KIND_ENUM)
    if not ids:
        return {}
    return {
        v.name[9:]: v.value
        for v in btf.type(ids[0]).values
        if v.name.startswith("BPF_FUNC_") and v.name != "BPF_FUNC_unspec"
    }


def kfunc_ids(btf: Any) -> _KfuncIds:
    """Kernel function name -> BTF FUNC id (a mapping that raises KeyError if unknown)."""
    return _KfuncIds(btf)


class _KfuncIds:
    def __init__(self, btf: Any) -> None:
        self.btf = btf

    def __getitem__(self, name: str) -> int:
        from .btf import BTF_KIND_FUNC

        ids = self.btf.find(name, BTF_KIND_FUNC)
        if not ids:
            raise KeyError(name)
        return ids[0]


def load_btf(path: Optional[str], required: bool) -> Any:
    """The BTF of ``path``, else the running kernel's; None if that is missing and not
    ``required`` (names are then only numbers)."""
    import os

    from .btf import BTF
    from .errors import PyBPFError

    if path is None and not required and not os.path.exists("/sys/kernel/btf/vmlinux"):
        return None
    try:
        return BTF.from_file(path) if path else BTF.kernel()
    except OSError as err:
        raise PyBPFError(f"cannot read BTF {path or '/sys/kernel/btf/vmlinux'}: "
                         f"{err.strerror}") from None  # fmt: skip


def read_input(path: str) -> bytes:
    import sys

    from .errors import PyBPFError

    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise PyBPFError(f"cannot read {path}: {err.strerror}") from None


def parser() -> argparse.ArgumentParser:
    """The parser of ``pybpf disasm``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="pybpf disasm",
        description="Disassemble raw BPF instruction bytes (as `pybpf asm -o` writes) into "
        "LLVM's assembly syntax; `pybpf asm` reads the output back to the same bytes.",
    )
    p.add_argument("file", help="raw little-endian instructions, 8 bytes a slot ('-': stdin)")
    p.add_argument(
        "--btf", metavar="FILE", help="helper and kfunc names from this BTF (default: the kernel)"
    )
    return p


def main(argv: list[str]) -> int:
    """``pybpf disasm FILE``: raw instruction bytes (8 per slot) back to assembly text."""
    import sys

    from .errors import PyBPFError

    args = parser().parse_args(argv)
    data = read_input(args.file)
    if len(data) % 8:
        raise PyBPFError(f"{args.file}: {len(data)} bytes is not a whole number of 8-byte slots")
    btf = load_btf(args.btf, required=args.btf is not None)
    helper, kfunc = btf_namers(btf) if btf is not None else (None, None)
    sys.stdout.write(disassemble(data, helper, kfunc))
    return 0
