"""Every instruction form: pybpf's bytes equal LLVM's, and disassemble -> assemble is the identity.

Oracle: ``llvm-mc-19 -triple=bpfel -mcpu=v4`` (Debian's ``llvm-19``, installed by .ci/run;
LLVM 14 predates the v4 instructions).  A table of every form, with edge operands, is
assembled by both; LLVM's disassembler must also print pybpf's text for the same bytes.
Hypothesis then checks the round trip over random instructions, random programs and
random bytes, and random instructions against llvm-mc again.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from policy import unavailable

from pybpf import asm_text, disasm, isa
from pybpf.errors import AsmError

pytestmark = pytest.mark.oracle("llvm-mc-19")

LLVM_MC = "llvm-mc-19"


@pytest.fixture(scope="module")
def llvm_mc() -> str:
    path = shutil.which(LLVM_MC)
    if path is None:
        unavailable(f"{LLVM_MC} missing (CI=true: not skipping; .ci/run installs llvm-19)")
    return path


# ---------------------------------------------------------------------------------------------
# the table: every form of the ISA in LLVM syntax, with edge operands

IMMS = ["0", "1", "-1", "2147483647", "-2147483648", "0x7f", "-0x80"]
OFFS = ["0", "8", "-8", "32767", "-32768"]
ALU = ["+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "<<=", ">>=", "s>>=", "=", "s/=", "s%="]
CONDS = ["==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&"]


def _mem(reg: str, off: str) -> str:
    return f"{reg} - {off[1:]}" if off.startswith("-") else f"{reg} + {off}"


def table() -> list[str]:
    lines: list[str] = []
    for r in "rw":
        for op in ALU:
            lines.append(f"{r}1 {op} {r}2")
            lines.append(f"{r}10 {op} {r}0")
            lines += [f"{r}3 {op} {imm}" for imm in IMMS]
        lines.append(f"{r}4 = -{r}4")
        lines += [f"{r}5 = (s{b}){r}6" for b in ((8, 16, 32) if r == "r" else (8, 16))]
    for kind in ("le", "be", "bswap"):
        lines += [f"r7 = {kind}{b} r7" for b in (16, 32, 64)]
    lines += ["r1 = addr_space_cast(r2, 1, 0)", "r1 = addr_space_cast(r2, 0, 1)"]
    for r in "rw":
        for cond in CONDS:
            lines.append(f"if {r}1 {cond} {r}2 goto +1")
            lines += [f"if {r}9 {cond} {imm} goto -1" for imm in IMMS]
        lines += [f"if {r}0 == 0 goto {off}" for off in ("+32767", "-32768", "+0")]
    lines += ["goto +0", "goto -32768", "goto +32767", "gotol +5", "gotol -32768"]
    lines += ["may_goto +0", "may_goto -3", "call 1", "call 212", "call -1", "callx r3", "exit"]
    lines += ["r1 = 0 ll", "r0 = 1234605616436508552 ll", "r9 = -1 ll", "r2 = 4294967296 ll",
              "r3 = -9223372036854775808 ll", "r4 = 9223372036854775807 ll"]  # fmt: skip
    lines += [f"ld_pseudo r1, {src}, {imm}" for src in range(1, 7) for imm in (0, 7, -1)]
    for bits in ("8", "16", "32", "64"):
        reg = "r" if bits == "64" else "w"
        for off in OFFS:
            lines.append(f"{reg}0 = *(u{bits} *)({_mem('r1', off)})")
            lines.append(f"*(u{bits} *)({_mem('r10', off)}) = {reg}2")
            lines += [f"*(u{bits} *)({_mem('r3', off)}) = {imm}" for imm in IMMS[:5]]
        if bits != "64":
            lines += [f"r2 = *(s{bits} *)({_mem('r4', off)})" for off in OFFS]
            lines += [f"r0 = *(u{bits} *)skb[{imm}]" for imm in ("0", "12", "-1", "2147483647")]
            lines += [f"r0 = *(u{bits} *)skb[r{n}]" for n in (1, 6, 10)]
    for bits, reg in (("32", "w"), ("64", "r")):
        for off in ("0", "-8", "32767"):
            mem = _mem("r1", off)
            for sym in ("+", "|", "&", "^"):
                lines.append(f"lock *(u{bits} *)({mem}) {sym}= {reg}2")
            lines.append(f"lock *(u{bits} *)({mem}) += r7")  # LLVM's older XADD syntax
            for name in ("add", "or", "and", "xor"):
                lines.append(f"{reg}3 = atomic_fetch_{name}((u{bits} *)({mem}), {reg}3)")
            x = "xchg32_32" if bits == "32" else "xchg_64"
            c = "cmpxchg32_32" if bits == "32" else "cmpxchg_64"
            lines.append(f"{reg}4 = {x}({mem}, {reg}4)")
            lines.append(f"{reg}0 = {c}({mem}, {reg}0, {reg}5)")
    return lines


def llvm_encode(llvm_mc: str, text: str) -> bytes:
    """The .text bytes llvm-mc assembles from ``text`` (labels resolved)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, raw = (Path(tmp) / n for n in ("in.s", "out.o", "out.bin"))
        src.write_text(text)
        run = subprocess.run(
            [llvm_mc, "-triple=bpfel", "-mcpu=v4", "--filetype=obj", str(src), "-o", str(obj)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        objcopy = shutil.which("llvm-objcopy-19") or "llvm-objcopy"
        subprocess.run(
            [objcopy, "-O", "binary", "--only-section=.text", str(obj), str(raw)], check=True
        )
        return raw.read_bytes()


def llvm_disassemble(llvm_mc: str, data: bytes) -> list[str]:
    """LLVM's text for each instruction in ``data``."""
    slots = (data[i : i + 8] for i in range(0, len(data), 8))
    hexes = "\n".join(" ".join(f"0x{b:02x}" for b in slot) for slot in slots)
    run = subprocess.run(
        [llvm_mc, "--disassemble", "-triple=bpfel", "-mcpu=v4"],
        input=hexes, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [ln.strip().replace("\t", " ") for ln in run.stdout.splitlines() if ln.startswith("\t")
            and not ln.strip().startswith(".")]  # fmt: skip


def test_every_form_encodes_like_llvm(llvm_mc: str) -> None:
    lines = table()
    assert len(lines) > 400
    ours = [asm_text.to_bytes(asm_text.assemble(line)) for line in lines]
    theirs = llvm_encode(llvm_mc, "\n".join(lines) + "\n")
    pos = 0
    for line, mine in zip(lines, ours):
        assert theirs[pos : pos + len(mine)].hex() == mine.hex(), line
        pos += len(mine)
    assert pos == len(theirs)


def test_llvm_disassembles_our_bytes_to_our_text(llvm_mc: str) -> None:
    """The disassembler prints what LLVM prints, except where pybpf is more explicit
    (LD_IMM64 pseudo sources: map_fd(3) instead of ld_pseudo)."""
    insns = [isa.decode(asm_text.to_bytes(asm_text.assemble(line)))[0] for line in table()]
    plain = [i for i in insns if not (i.opcode == isa.LD_IMM64 and i.src)]
    theirs = llvm_disassemble(llvm_mc, isa.encode(plain))
    ours = [disasm.format_insn(i) for i in plain]
    assert len(theirs) == len(ours)
    for mine, llvm in zip(ours, theirs):
        assert mine == llvm


def test_labels_calls_and_gotol_resolve_like_llvm(llvm_mc: str) -> None:
    text = """
        gotol far
        if r1 > 3 goto LBB0_2
        if w1 s< w2 goto LBB0_2
        call sub
        r1 = 1 ll
    LBB0_2:
        may_goto LBB0_2
        goto LBB0_2
        exit
    sub:
        r0 = 0
        exit
    """ + "r0 = 0\n" * 40000 + "far: exit\n"
    ours = asm_text.to_bytes(asm_text.assemble(text))
    assert ours == llvm_encode(llvm_mc, text)
    first = isa.decode(ours[:8])[0]
    assert (first.opcode, first.imm) == (isa.BPF_JMP32 | isa.BPF_JA, 40010)


def test_every_table_form_is_an_instruction_and_round_trips() -> None:
    for line in table():
        raw = asm_text.to_bytes(asm_text.assemble(line))
        (insn,) = isa.decode(raw)
        assert isa.check(insn) is None, line
        text = disasm.disassemble(raw)
        assert asm_text.to_bytes(asm_text.assemble(text)) == raw, (line, text)


# ---------------------------------------------------------------------------------------------
# random instructions

OPCODES = sorted(
    {
        code
        for code in range(256)
        for src in (0, 1, 2)
        for off in (0, 1, 8, 16, 32)
        for imm in (0, 16, 1, 0xE1, 0xF1, 0x100, 0x110, 0x51)
        if isa.check(isa.Instruction(code, 1, src, off, imm)) is None
    }
)
IMM_EDGES = [0, 1, -1, 16, 32, 64, 1 << 31, -(1 << 31), (1 << 31) - 1, 0xFFFFFFFF] + list(
    isa.ATOMIC_OPS
) + [isa.BPF_LOAD_ACQ, isa.BPF_STORE_REL]


@st.composite
def instructions(draw: st.DrawFn) -> isa.Instruction:
    code = draw(st.sampled_from(OPCODES))
    dst = draw(st.integers(0, 10))
    src = draw(st.integers(0, 10))
    off = draw(
        st.one_of(st.sampled_from([0, 1, 8, 16, 32, -1]), st.integers(-(1 << 15), (1 << 15) - 1))
    )
    if code == isa.LD_IMM64:
        imm = draw(st.integers(0, (1 << 64) - 1))
        src = draw(st.integers(0, 6))
        off = 0
    else:
        imm = draw(st.one_of(st.sampled_from(IMM_EDGES), st.integers(-(1 << 31), (1 << 31) - 1)))
        imm = imm - (1 << 32) if imm >= 1 << 31 else imm
    insn = isa.Instruction(code, dst, src, off, imm)
    special = draw(st.sampled_from(IMM_EDGES))
    for fix in REPAIRS:  # keep what is valid, zero or pick what the form constrains
        candidate = insn.with_(**{k: (special if v == "special" else v) for k, v in fix.items()})
        if isa.check(candidate) is None:
            return candidate
    assume(False)
    return insn


REPAIRS: list[dict[str, object]] = [
    {}, {"imm": 0}, {"off": 0}, {"src": 0}, {"imm": 0, "off": 0}, {"off": 0, "src": 0},
    {"imm": 0, "src": 0}, {"imm": 0, "off": 0, "src": 0}, {"imm": "special"},
    {"imm": "special", "off": 0}, {"imm": "special", "off": 0, "src": 0},
    {"dst": 0, "src": 0, "imm": 0}, {"dst": 0, "src": 0, "off": 0},
    {"dst": 0, "off": 0, "imm": 0}, {"dst": 0, "src": 0, "off": 0, "imm": 0},
]  # fmt: skip


SLOW_OK = [HealthCheck.filter_too_much, HealthCheck.too_slow]


@settings(max_examples=1500, suppress_health_check=SLOW_OK)
@given(instructions())
def test_disassemble_assemble_identity(insn: isa.Instruction) -> None:
    raw = insn.encode()
    text = disasm.format_insn(insn)
    assert asm_text.to_bytes(asm_text.assemble(text)) == raw, text


@settings(max_examples=200, suppress_health_check=SLOW_OK)
@given(st.lists(instructions(), min_size=1, max_size=30))
def test_programs_round_trip_with_labels(insns: list[isa.Instruction]) -> None:
    raw = isa.encode(insns)
    text = disasm.disassemble(raw)
    assert asm_text.to_bytes(asm_text.assemble(text)) == raw, text


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=160).map(lambda b: b[: len(b) // 8 * 8]))
def test_any_bytes_round_trip(raw: bytes) -> None:
    """Bytes that are no instruction print as .quad, so nothing is lost."""
    text = disasm.disassemble(raw)
    assert asm_text.to_bytes(asm_text.assemble(text)) == raw, text


def _llvm_expressible(insn: isa.Instruction) -> bool:
    code, cls, op = insn.opcode, insn.opcode & 7, insn.opcode & 0xF0
    if code == isa.LD_IMM64:
        return insn.src == 0
    if cls == isa.BPF_JMP and op == isa.BPF_CALL and not code & isa.BPF_X:
        return insn.src == 0  # LLVM has no syntax for pseudo and kfunc calls
    if code == isa.BPF_JMP32 | isa.BPF_JA:
        return -(1 << 15) <= insn.imm < (1 << 15)  # llvm-mc 19 parses 16-bit gotol numbers only
    if cls == isa.BPF_STX and code & 0xE0 == isa.BPF_ATOMIC:
        return insn.imm not in (isa.BPF_LOAD_ACQ, isa.BPF_STORE_REL)  # LLVM 20
    if cls == isa.BPF_LD and code & 0xE0 == isa.BPF_IND:
        return insn.imm == 0  # skb[rN + imm] is pybpf's
    return True


def test_random_instructions_encode_like_llvm(llvm_mc: str) -> None:
    """3000 random instructions, printed by pybpf, assembled by llvm-mc: same bytes."""
    rng = random.Random(1234)
    picked: list[isa.Instruction] = []
    while len(picked) < 3000:
        code = rng.choice(OPCODES)
        imm = rng.choice([rng.choice(IMM_EDGES), rng.randrange(-(1 << 31), 1 << 31)])
        imm = imm - (1 << 32) if imm >= 1 << 31 else imm
        off = rng.choice([0, 1, 8, 16, 32, rng.randrange(-(1 << 15), 1 << 15)])
        if code == isa.LD_IMM64:
            imm, off = rng.randrange(1 << 64), 0
        insn = isa.Instruction(code, rng.randrange(11), rng.randrange(11), off, imm)
        if code == isa.LD_IMM64:
            insn = insn.with_(src=0)
        if isa.check(insn) is None and _llvm_expressible(insn):
            picked.append(insn)
    texts = [disasm.format_insn(i) for i in picked]
    assert llvm_encode(llvm_mc, "".join(t + "\n" for t in texts)) == isa.encode(picked)
    # and LLVM's disassembler prints the same text (jumps as numbers: no labels here)
    assert llvm_disassemble(llvm_mc, isa.encode(picked)) == texts


# ---------------------------------------------------------------------------------------------
# errors: one line, with the file and line number

@pytest.mark.parametrize(
    "line, message",
    [
        ("frob r1, r2", "unknown mnemonic 'frob'"),
        ("r11 = 1", "bad register 'r11'"),
        ("r1 += w2", "expected a 64-bit r register"),
        ("r1 = 0x100000000", "does not fit in 32 bits"),
        ("r1 = 18446744073709551616 ll", "does not fit in 64 bits"),
        ("goto +40000", "jump offset 40000 does not fit in 16 bits"),
        ("*(u32 *)(r1 + 32768) = r2", "memory offset 32768 does not fit in 16 bits"),
        ("r0 = *(s64 *)(r1 + 0)", "no 64-bit access here"),
        ("r1 = be17 r1", "byte swap of 17 bits"),
        ("w1 = (s32)w2", "no sign extension from 32 bits"),
        ("r0 = cmpxchg_64(r1 + 0, r3, r2)", "cmpxchg compares with and returns r0"),
        ("goto nowhere", "undefined label 'nowhere'"),
        ("r1 = bogus(3) ll", "unknown LD_IMM64 source 'bogus'"),
        ("r0 = r1 ll", "not the register r1"),
        ("w0 = *(u64 *)(r1 + 0)", "w0: expected a 64-bit r register"),
        ("r1 = r2 +", "cannot parse"),
    ],
)
def test_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(AsmError) as err:
        asm_text.assemble(f"r0 = 0\n  # comment\n{line}\nexit\n", "prog.s")
    assert str(err.value).startswith("prog.s:3: ")
    assert message in str(err.value)


def test_duplicate_label_and_far_conditional_jump() -> None:
    with pytest.raises(AsmError, match=r"x.s:2: label 'a' defined twice"):
        asm_text.assemble("a: exit\na: exit\n", "x.s")
    text = "if r1 == 0 goto far\n" + "r0 = 0\n" * 40000 + "far: exit\n"
    with pytest.raises(AsmError, match=r"x.s:1: jump to 'far' spans 40000 slots"):
        asm_text.assemble(text, "x.s")


def test_helper_and_map_names() -> None:
    insns = asm_text.assemble("call bpf_ktime_get_ns\ncall ktime_get_ns\nr1 = start ll\nexit\n")
    assert [i.helper for i in insns[:2]] == ["ktime_get_ns", "ktime_get_ns"]
    assert (insns[2].src, insns[2].map) == (isa.BPF_PSEUDO_MAP_FD, "start")
    with pytest.raises(AsmError, match="helper names need a BTF"):
        asm_text.to_bytes(insns)
    numbers = {"ktime_get_ns": 5}
    with pytest.raises(AsmError, match="map 'start' by name"):
        asm_text.to_bytes(insns, numbers.__getitem__)
    raw = asm_text.to_bytes(insns[:2], numbers.__getitem__)
    assert raw == bytes.fromhex("8500000005000000") * 2
    assert re.search(r"call bpf_ktime_get_ns#5", disasm.format_insn(insns[0].with_(imm=5)))
