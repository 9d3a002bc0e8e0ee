"""The DSL: encodings, labels, range checks."""

from __future__ import annotations

import sys

import pytest

from pybpf import isa
from pybpf.asm import FP, R0, R1, R2, R10, Asm
from pybpf.errors import AsmError


def test_encodings_follow_the_isa():
    a = Asm()
    a.mov(R0, 1)  # b7 00 0000 01000000
    a.ldx(R2, R1, 8, size=8)  # 79 12 0800 00000000
    a.stx(FP, -4, R1, size=4)  # 63 1a fcff 00000000
    a.ld_imm64(R1, 0x1122334455667788)
    a.mov32(R2, 0xFFFFFFFF)  # b4 02 0000 ffffffff
    a.exit()
    raw = isa.encode(a.assemble())
    assert raw.hex() == (
        "b700000001000000"
        "7912080000000000"
        "631afcff00000000"
        "1801000088776655" "0000000044332211"
        "b4020000ffffffff"
        "9500000000000000"
    )  # fmt: skip
    assert isa.encode(isa.decode(raw)) == raw


def test_labels_count_ld_imm64_as_two_slots():
    a = Asm()
    a.jeq(R1, 0, "out")
    a.ld_imm64(R2, 1)
    a.label("out")
    a.jne(R1, R2, "out")  # backward
    a.exit()
    insns = a.assemble()
    assert insns[0].off == 2
    assert insns[2].off == -1


def test_undefined_label_and_missing_exit():
    a = Asm()
    a.ja("nowhere")
    with pytest.raises(AsmError, match="undefined label"):
        a.assemble()
    with pytest.raises(AsmError, match="exit"):
        Asm().mov(R0, 0).assemble()


def test_jump_beyond_16_bits_becomes_gotol():
    a = Asm()
    a.ja("far")
    a.jeq(R1, 0, "far")  # relaxed: jne +1; gotol far
    a.jset(R1, 1, "far")  # no inverse: jset +1; goto +1; gotol far
    a.jne(R1, 0, "near")
    a.label("near")
    for _ in range(40000):
        a.mov(R0, 0)
    a.label("far").exit()
    insns = a.assemble()
    jmp = isa.BPF_JMP | isa.BPF_K
    gotol = isa.BPF_JMP32 | isa.BPF_JA
    assert [(i.opcode, i.off, i.imm) for i in insns[:7]] == [
        (gotol, 0, 40006),
        (jmp | isa.BPF_JNE, 1, 0),
        (gotol, 0, 40004),
        (jmp | isa.BPF_JSET, 1, 1),
        (isa.BPF_JMP | isa.BPF_JA, 1, 0),
        (gotol, 0, 40001),
        (jmp | isa.BPF_JNE, 0, 0),
    ]


def test_errors_name_the_dsl_line():
    a = Asm()
    a.mov(R0, 0)
    a.ja("nowhere")
    line = sys._getframe().f_lineno - 1
    with pytest.raises(AsmError, match=rf"test_asm.py:{line}: jump to undefined label 'nowhere'"):
        a.assemble()
    a = Asm()
    a.emit(isa.Instruction(isa.BPF_ALU64 | isa.BPF_END | isa.BPF_X, 1, 0, 0, 16))
    a.exit()
    with pytest.raises(AsmError, match=r"test_asm.py:\d+: not an eBPF instruction: bad byte swap"):
        a.assemble()


def test_out_of_range_operands():
    with pytest.raises(AsmError):
        Asm().mov(R0, 1 << 40)
    with pytest.raises(AsmError):
        Asm().ldx(R0, R10, 1 << 16, size=8)
    with pytest.raises(ValueError):
        Asm().ldx(R0, R10, 0, size=3)
    with pytest.raises(AsmError):
        Asm().label("x").label("x")


def test_subprog_starts():
    from pybpf.asm import R6

    a = Asm()
    a.ld_func(R2, "callback")  # slots 0-1
    a.call_sub("helper")  # 2
    a.mov(R0, 0).exit()  # 3, 4
    a.subprog("helper").mov(R0, R6).exit()  # 5, 6
    a.subprog("callback").call_sub("helper").exit()  # 7, 8
    assert isa.subprog_starts(a.assemble()) == [0, 5, 7]


def test_helper_calls_by_name_or_number():
    insns = Asm().call("ktime_get_ns").call("bpf_ktime_get_ns").call(5).exit().assemble()
    assert [(i.helper, i.imm) for i in insns[:3]] == [("ktime_get_ns", 0)] * 2 + [(None, 5)]
