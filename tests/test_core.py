"""CO-RE engine: libbpf's rules on small hand-built target BTF."""

from __future__ import annotations

import pytest

from pybpf.asm import (
    BPF_CORE_FIELD_BYTE_OFFSET,
    BPF_CORE_FIELD_BYTE_SIZE,
    BPF_CORE_FIELD_EXISTS,
    BPF_CORE_FIELD_SIGNED,
    BPF_CORE_TYPE_EXISTS,
    BPF_CORE_TYPE_SIZE,
)
from pybpf.btf import BTF
from pybpf.btf_encoder import BTFBuilder
from pybpf.cdecl import Array, Struct, char, encode_local_btf, long, pid_t, u32, u64
from pybpf.core import CoreEngine, CoreRelo, essential_name
from pybpf.errors import CORERelocationError


@pytest.mark.parametrize(
    "name, essential",
    [
        ("task_struct", "task_struct"),
        ("task_struct___x", "task_struct"),
        ("task_struct___o", "task_struct"),
        ("foo___1___2", "foo___1"),  # only the last flavor is stripped
        ("a____b", "a____b"),  # four underscores: no separator
        ("___x", "___x"),  # nothing before the separator
        ("x___", "x___"),  # nothing after it
        ("x___y_", "x"),
        ("abc", "abc"),
    ],
)
def test_essential_name(name, essential):
    assert essential_name(name) == essential


def target_btf(with_state_first=False, extra=None) -> BTF:
    """struct task_struct { int pad; union { u32 __state; }; ...; pid_t pid; char comm[16]; }"""
    b = BTFBuilder()
    int_ = b.add_int("int", 4, signed=True)
    uint = b.add_int("unsigned int", 4)
    ch = b.add_int("char", 1, signed=True, char=True)
    idx = b.add_int("__ARRAY_SIZE_TYPE__", 4)
    pid = b.add_typedef("pid_t", b.add_typedef("__kernel_pid_t", int_))
    comm = b.add_array(ch, idx, 16)
    anon = b.add_union("", 4, [("__state", uint, 0)])
    b.add_struct(
        "task_struct",
        64,
        [("pad", int_, 0), ("", anon, 64), ("pid", pid, 256), ("tgid", pid, 288),
         ("comm", comm, 320)],
    )  # fmt: skip
    if extra:
        extra(b, int_)
    return BTF.from_bytes(b.encode())


def relocate(local_root, access, kind, target):
    data, ids = encode_local_btf([local_root])
    engine = CoreEngine(BTF.from_bytes(data), target)
    return engine.relocate(CoreRelo(0, ids[id(local_root)], access, kind))


task_struct = Struct("task_struct", [("pid", pid_t), ("tgid", pid_t), ("comm", Array(char, 16))])
task_struct___x = Struct("task_struct___x", [("__state", u32)])
task_struct___o = Struct("task_struct___o", [("state", long)])


def test_field_offsets_and_sizes():
    t = target_btf()

    def value(ref, kind):
        return relocate(task_struct, ref.access, kind, t).new_val

    assert value(task_struct.pid, BPF_CORE_FIELD_BYTE_OFFSET) == 32
    assert value(task_struct.tgid, BPF_CORE_FIELD_BYTE_OFFSET) == 36
    assert value(task_struct.comm, BPF_CORE_FIELD_BYTE_SIZE) == 16
    assert value(task_struct.comm[5], BPF_CORE_FIELD_BYTE_OFFSET) == 45
    assert value(task_struct.pid, BPF_CORE_FIELD_SIGNED) == 1


def test_member_inside_anonymous_union_is_found():
    r = relocate(task_struct___x, task_struct___x.__state.access, BPF_CORE_FIELD_BYTE_OFFSET,
                 target_btf())  # fmt: skip
    assert (r.orig_val, r.new_val, r.new_sz) == (0, 8, 4)


def test_missing_field_exists_zero_and_poisons():
    t = target_btf()
    assert relocate(task_struct___o, "0:0", BPF_CORE_FIELD_EXISTS, t).new_val == 0
    r = relocate(task_struct___o, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, t)
    assert r.poison and r.new_val is None


def test_incompatible_field_type_does_not_match():
    # local `long pid` vs target int: both INT, compatible; but a struct vs int is not.
    inner = Struct("inner", [("x", u32)])
    weird = Struct("task_struct", [("pid", inner)])
    r = relocate(weird, "0:0", BPF_CORE_FIELD_EXISTS, target_btf())
    assert r.new_val == 0


def test_signed_width_change_is_refused_unsigned_allowed():
    from pybpf.core import patch_insn
    from pybpf.isa import BPF_DW, BPF_LDX, BPF_MEM, Instruction

    # local u64 __state vs target u32: unsigned, so the load narrows.
    wide = Struct("task_struct___w", [("__state", u64)])
    r = relocate(wide, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, target_btf())
    assert (r.orig_sz, r.new_sz, r.fail_memsz_adjust) == (8, 4, False)
    # local long (signed, 8) vs target pid_t (int, 4): libbpf poisons the load.
    signed = Struct("task_struct___s", [("pid", long)])
    r = relocate(signed, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, target_btf())
    assert r.fail_memsz_adjust
    ldx = Instruction(BPF_LDX | BPF_MEM | BPF_DW, 1, 2, 0)
    (poisoned,) = patch_insn(ldx, r, "pid")
    assert poisoned.imm == 0xBAD2310


def test_flavors_are_candidates_and_ambiguity_is_an_error():
    def two_flavors(b, int_):
        b.add_struct("thing___a", 8, [("v", int_, 0)])
        b.add_struct("thing___b", 8, [("v", int_, 32)])

    t = target_btf(extra=two_flavors)
    local = Struct("thing", [("v", u32)])
    with pytest.raises(CORERelocationError, match="ambiguous"):
        relocate(local, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, t)


def test_type_relocations():
    t = target_btf()
    assert relocate(task_struct, "0", BPF_CORE_TYPE_EXISTS, t).new_val == 1
    assert relocate(task_struct, "0", BPF_CORE_TYPE_SIZE, t).new_val == 64
    nothing = Struct("no_such_struct", [("a", u32)])
    assert relocate(nothing, "0", BPF_CORE_TYPE_EXISTS, t).new_val == 0


def test_bad_access_string():
    with pytest.raises(CORERelocationError):
        relocate(task_struct, "0:9", BPF_CORE_FIELD_BYTE_OFFSET, target_btf())
    with pytest.raises(CORERelocationError):
        relocate(task_struct, "0:x", BPF_CORE_FIELD_BYTE_OFFSET, target_btf())
