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


# ---------------------------------------------------------------------------- libbpf rules
from pybpf.cdecl import Enum, u8  # noqa: E402
from pybpf.core import Rules, patch_insn  # noqa: E402
from pybpf.isa import LD_IMM64, Instruction  # noqa: E402


def test_ld_imm64_poison_covers_both_slots():
    r = relocate(task_struct___o, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, target_btf())
    out = patch_insn(Instruction(LD_IMM64, 1, 0, 0, 0), r, "state")
    assert [(i.opcode, i.imm) for i in out] == [(0x85, 0xBAD2310)] * 2
    assert sum(i.slots for i in out) == 2


def test_missing_types_give_zero_not_poison():
    from pybpf.asm import BPF_CORE_TYPE_ID_TARGET

    nothing = Struct("no_such_struct", [("a", u32)])
    for kind in (BPF_CORE_TYPE_SIZE, BPF_CORE_TYPE_ID_TARGET, BPF_CORE_TYPE_EXISTS):
        r = relocate(nothing, "0", kind, target_btf())
        assert (r.new_val, r.poison) == (0, False)


def _enum_target(b, int_):
    b.add_enum("state", 4, [("S_RUN", 0), ("S_BIG", 0x80000000)])
    b.add_enum("wide", 8, [("W_BIG", 1 << 40)])


def test_enum_values_sign_extended_like_libbpf_and_enum64():
    from pybpf.asm import BPF_CORE_ENUMVAL_EXISTS, BPF_CORE_ENUMVAL_VALUE

    t = target_btf(extra=_enum_target)
    local = Enum("state___mine", {"S_BIG": 1, "S_GONE": 2})
    big = relocate(local, "0", BPF_CORE_ENUMVAL_VALUE, t)
    assert big.new_val == 0xFFFFFFFF80000000  # btf_enum.val is an __s32 in libbpf
    gone = relocate(local, "1", BPF_CORE_ENUMVAL_EXISTS, t)
    assert gone.new_val == 0
    assert relocate(local, "1", BPF_CORE_ENUMVAL_VALUE, t).poison
    # A local 4-byte enum finds an enum64 under libbpf's rules, not the kernel's.
    w = Enum("wide", {"W_BIG": 1})
    data, ids = encode_local_btf([w])
    relo = CoreRelo(0, ids[id(w)], "0", BPF_CORE_ENUMVAL_VALUE)
    assert CoreEngine(BTF.from_bytes(data), t).relocate(relo).new_val == 1 << 40
    assert CoreEngine(BTF.from_bytes(data), t, rules="kernel").relocate(relo).poison


def test_libbpf_narrows_candidates_the_kernel_does_not():
    def flavors(b, int_):
        b.add_struct("thing___a", 4, [("x", int_, 0)])
        b.add_struct("thing___b", 4, [("y", int_, 0)])

    t = target_btf(extra=flavors)
    local = Struct("thing", [("x", u32), ("y", u32)])
    data, ids = encode_local_btf([local])
    relos = [CoreRelo(0, ids[id(local)], acc, BPF_CORE_FIELD_EXISTS) for acc in ("0:0", "0:1")]
    lib = CoreEngine(BTF.from_bytes(data), t)
    assert [lib.relocate(r).new_val for r in relos] == [1, 0]  # thing___b pruned by relo #0
    kern = CoreEngine(BTF.from_bytes(data), t, rules=Rules.get("kernel"))
    assert [kern.relocate(r).new_val for r in relos] == [1, 1]


def test_type_matches():
    from pybpf.asm import BPF_CORE_TYPE_MATCHES

    t = target_btf()
    same = Struct("task_struct", [("pid", pid_t), ("comm", Array(char, 16))])
    assert relocate(same, "0", BPF_CORE_TYPE_MATCHES, t).new_val == 1
    wrong_len = Struct("task_struct", [("comm", Array(char, 8))])
    assert relocate(wrong_len, "0", BPF_CORE_TYPE_MATCHES, t).new_val == 0
    wrong_sign = Struct("task_struct", [("pid", u32)])
    assert relocate(wrong_sign, "0", BPF_CORE_TYPE_MATCHES, t).new_val == 0
    assert relocate(wrong_sign, "0", BPF_CORE_TYPE_EXISTS, t).new_val == 1


def test_bitfields_and_anonymous_members():
    from pybpf.asm import BPF_CORE_FIELD_LSHIFT_U64, BPF_CORE_FIELD_RSHIFT_U64

    def bits(b, int_):
        uint = b.add_int("unsigned int", 4)
        anon = b.add_struct("", 8, [("lo", uint, 0, 3), ("hi", uint, 35, 5)])
        b.add_struct("flags", 16, [("pad", int_, 0), ("", anon, 64)])

    t = target_btf(extra=bits)
    local = Struct("flags", [("hi", u32, 5), ("lo", u8, 3)])
    assert local.hi.access == "0:0" and local.hi.bitfield == 5

    def val(ref, kind):
        return relocate(local, ref.access, kind, t).new_val

    # hi: bits 99..103 of the struct: 4-byte unit at byte 12, bit 3 in it.
    assert val(local.hi, BPF_CORE_FIELD_BYTE_OFFSET) == 12
    assert val(local.hi, BPF_CORE_FIELD_BYTE_SIZE) == 4
    assert val(local.hi, BPF_CORE_FIELD_LSHIFT_U64) == 64 - (99 + 5 - 96)
    assert val(local.hi, BPF_CORE_FIELD_RSHIFT_U64) == 59
    assert val(local.hi, BPF_CORE_FIELD_SIGNED) == 0


def _split_module(base: BTF) -> bytes:
    """Split BTF on top of ``base``: int (id N) and struct mod_thing {int a; int b;}."""
    import struct as st

    n = len(base)
    strings = b"\0int\0mod_thing\0a\0b\0"
    base_str = base._se - base._ss  # string offsets continue after the base's
    off = {name: base_str + strings.index(name.encode() + b"\0") for name in
           ("int", "mod_thing", "a", "b")}  # fmt: skip
    types = st.pack("<III I", off["int"], 1 << 24, 4, (1 << 24) | 32)
    types += st.pack("<III", off["mod_thing"], (4 << 24) | 2, 8)
    types += st.pack("<III III", off["a"], n, 0, off["b"], n, 32)
    hdr = st.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_module_btf_only_when_vmlinux_has_no_candidate():
    base = target_btf()
    module = BTF.from_bytes(_split_module(base), base=base)
    loads = []

    def corrupt() -> BTF:
        loads.append(1)
        return BTF.from_bytes(b"\x9f\xeb\x01\x00" + b"\xff" * 20)

    # A vmlinux type never reads module BTF, even a corrupt one.
    data, ids = encode_local_btf([task_struct])
    engine = CoreEngine(BTF.from_bytes(data), base, modules=[("bad_mod", corrupt)])
    assert engine.relocate(CoreRelo(0, ids[id(task_struct)], "0:0", 0)).new_val == 32
    assert loads == []
    # A module type is found in the module, at the module's ids.
    thing = Struct("mod_thing___v2", [("b", u32)])
    data, ids = encode_local_btf([thing])
    engine = CoreEngine(BTF.from_bytes(data), base, modules=[("good_mod", lambda: module)])
    r = engine.relocate(CoreRelo(0, ids[id(thing)], "0:0", 0))
    assert (r.new_val, r.target_type_id) == (4, len(base) + 1)
    assert r.candidates[0].btf_name == "good_mod"
    # The same search with the corrupt module fails and says which module.
    engine = CoreEngine(BTF.from_bytes(data), base, modules=[("bad_mod", corrupt)])
    with pytest.raises(CORERelocationError, match="bad_mod"):
        engine.relocate(CoreRelo(0, ids[id(thing)], "0:0", 0))


def test_candidates_explain_rejections():
    t = target_btf()
    weird = Struct("task_struct___w", [("pid", Struct("inner", [("x", u32)]))])
    r = relocate(weird, "0:0", BPF_CORE_FIELD_EXISTS, t)
    assert r.new_val == 0
    (cand,) = r.candidates
    assert not cand.matched and "pid" in cand.reason and "incompatible" in cand.reason


def test_relocating_against_own_local_btf_changes_nothing():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_core_gen import _blob, generate

    from pybpf.asm import R0, Asm
    from pybpf.cdecl import EnumValueRef, FieldRef
    from pybpf.object import ObjectSpec, ProgramSpec, _core_roots

    cases = [c for c in generate(_blob("debian-6.1.0-56-amd64"))
             if "___" not in getattr(c.target, "root", c.target).name
             and c.kind not in ("target_type_id", "local_type_id")]  # fmt: skip
    a = Asm()
    for c in cases:
        c.emit(a)
    a.mov(R0, 0).exit()
    spec = ObjectSpec("x", [ProgramSpec("x", "raw_tp/x", a.assemble())])
    data, ids = encode_local_btf(_core_roots(spec.programs))
    local = BTF.from_bytes(data)
    engine = CoreEngine(local, local)
    same = 0
    for c in cases:
        t = c.target
        root = t.root if isinstance(t, (FieldRef, EnumValueRef)) else t
        access = t.access if isinstance(t, (FieldRef, EnumValueRef)) else "0"
        try:
            r = engine.relocate(CoreRelo(0, ids[id(root)], access, c.kind_number))
        except CORERelocationError as err:
            # The same name declared twice locally, or a size-less (void) typedef.
            assert "ambiguous" in str(err) or "no size" in str(err), err
            continue
        assert not r.poison and r.new_val == r.orig_val, c.label
        same += 1
    assert same > 500


def test_module_sources_are_read_lazily(tmp_path):
    from pybpf.core import module_sources

    base = target_btf()
    (tmp_path / "vmlinux").write_bytes(b"not read")
    (tmp_path / "good_mod").write_bytes(_split_module(base))
    (tmp_path / "broken_mod").write_bytes(b"\x9f\xeb\x01\x00garbage")
    sources = module_sources(base, str(tmp_path))
    assert [name for name, _ in sources] == ["broken_mod", "good_mod"]
    thing = Struct("mod_thing", [("a", u32)])
    data, ids = encode_local_btf([thing])
    engine = CoreEngine(BTF.from_bytes(data), base, modules=sources[1:])
    assert engine.relocate(CoreRelo(0, ids[id(thing)], "0:0", 0)).new_val == 0
    engine = CoreEngine(BTF.from_bytes(data), base, modules=sources)
    with pytest.raises(CORERelocationError, match="broken_mod"):
        engine.relocate(CoreRelo(0, ids[id(thing)], "0:0", 0))
    assert module_sources(base, str(tmp_path / "missing")) == []


def _names_target(b, int_):
    for name in ("foo", "foo___1", "foo___1___2", "a____b", "a", "___x", "x"):
        b.add_struct(name, 4, [("v", int_, 0)])


@pytest.mark.parametrize(
    "local, expected",
    [
        ("foo___z", ["foo", "foo___1"]),  # foo___1___2's essential name is foo___1
        ("foo___1___q", ["foo___1___2"]),
        ("a____b", ["a____b"]),  # no flavor separator: not a candidate of "a"
        ("___x", ["___x"]),
        ("foo", ["foo", "foo___1"]),
    ],
)
def test_candidates_by_libbpf_essential_names(local, expected):
    t = target_btf(extra=_names_target)
    s = Struct(local, [("v", u32)])
    r = relocate(s, "0:0", BPF_CORE_FIELD_EXISTS, t)
    assert sorted(c.type_name for c in r.candidates) == sorted(expected)


def test_ambiguity_where_libbpf_raises_it():
    from pybpf.btf_encoder import BTFBuilder

    def target(members_b):
        b = BTFBuilder()
        i4 = b.add_int("int", 4, signed=True)
        i8 = b.add_int("long", 8, signed=True)
        b.add_struct("thing___a", 8, [("v", i4, 0)])
        b.add_struct("thing___b", 8, [("v", i8 if members_b == "wide" else i4,
                                        32 if members_b == "moved" else 0)])  # fmt: skip
        return BTF.from_bytes(b.encode())

    local = Struct("thing", [("v", u32)])
    with pytest.raises(CORERelocationError, match="field offset differs"):
        relocate(local, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, target("moved"))
    with pytest.raises(CORERelocationError, match="give 4 and 8"):
        relocate(local, "0:0", BPF_CORE_FIELD_BYTE_SIZE, target("wide"))
    # Same offset and same answer from both: no ambiguity (libbpf accepts duplicates).
    assert relocate(local, "0:0", BPF_CORE_FIELD_BYTE_OFFSET, target("wide")).new_val == 0
    assert relocate(local, "0:0", BPF_CORE_FIELD_BYTE_SIZE, target("same")).new_val == 4


def test_declaration_mistakes_are_pybpf_errors(tmp_path):
    """A user's program with a wrong member path: one `pybpf: error:` line, no traceback."""
    import subprocess
    import sys

    from pybpf.errors import PyBPFError

    for bad in (lambda: task_struct.nope, lambda: task_struct.pid[0],
                lambda: task_struct.comm[16], lambda: Struct("s", [("b", Struct("i", []), 3)])):
        with pytest.raises(PyBPFError):
            bad()
    prog = tmp_path / "bad.py"
    prog.write_text(
        "from pybpf.cdecl import Struct, u32\n"
        "t = Struct('task_struct', [('pid', u32)])\n"
        "t.tgid\n"
    )
    out = subprocess.run([sys.executable, "-m", "pybpf", "explain", str(prog)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("pybpf: error:") and "no member 'tgid'" in out.stderr
