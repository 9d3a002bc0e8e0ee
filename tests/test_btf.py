"""Tests of pybpf.btf (parser) and pybpf.btf_encoder (builder).

The oracle is bpftool's raw dump (``bpftool btf dump file F format raw``) of the real kernel
BTF blobs in btf/: every expected value is parsed from its output, none is typed in here.
"""

from __future__ import annotations

import functools
import lzma
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpf.btf import (
    BTF,
    BTF_FUNC_EXTERN,
    BTF_FUNC_GLOBAL,
    BTF_FUNC_STATIC,
    BTF_INT_BOOL,
    BTF_INT_CHAR,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    BTF_VAR_GLOBAL_ALLOCATED,
    BTF_VAR_GLOBAL_EXTERN,
    BTF_VAR_STATIC,
    KIND_NAMES,
    EnumValue,
    Member,
    Param,
    Type,
    VarSecinfo,
)
from pybpf.btf_encoder import BTFBuilder
from pybpf.errors import BTFError

BTF_DIR = Path(__file__).resolve().parent.parent / "btf"
BLOBS = sorted(BTF_DIR.glob("*.btf.xz"))
BROAD_BLOB = "firecracker-6.18.44-fc-v657.btf.xz"  # the running kernel's BTF, the largest
SMALL_BLOB = "debian-5.10.0-46-amd64.btf.xz"

needs_bpftool = pytest.mark.oracle("bpftool")


@functools.cache
def raw_blob(name: str) -> bytes:
    return lzma.decompress((BTF_DIR / name).read_bytes())


def bpftool_dump(path: Path, *extra: str) -> str:
    return subprocess.run(
        ["bpftool", "btf", "dump", "file", str(path), *extra, "format", "raw"],
        check=True, capture_output=True, text=True,
    ).stdout


def split_dump(text: str) -> dict[int, list[str]]:
    """bpftool raw dump -> {type id: [header line, entry lines...]}."""
    out: dict[int, list[str]] = {}
    cur: list[str] = []
    for line in text.splitlines():
        if line.startswith("["):
            cur = [line]
            out[int(line[1:line.index("]")])] = cur
        elif line.startswith("\t"):
            cur.append(line)
    return out


# ------------------------------------------------------------------ bpftool's format, rendered

_INT_ENC = {0: "(none)", BTF_INT_SIGNED: "SIGNED", BTF_INT_CHAR: "CHAR", BTF_INT_BOOL: "BOOL"}
_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _q(name: str) -> str:
    return f"'{name or '(anon)'}'"


def render(btf: BTF, t: Type) -> list[str]:
    """What bpftool prints for ``t`` (bpftool v7 btf.c dump_btf_type, plain-text branch)."""
    head = f"[{t.id}] {t.kind_name} {_q(t.name)}"
    k = t.kind
    lines: list[str] = []
    if k == BTF_KIND_INT:
        head += (f" size={t.size} bits_offset={t.int_offset} nr_bits={t.int_bits} "
                 f"encoding={_INT_ENC.get(t.int_encoding, 'UNKN')}")
    elif k in (BTF_KIND_PTR, BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT,
               BTF_KIND_TYPEDEF, BTF_KIND_TYPE_TAG):
        head += f" type_id={t.type}"
    elif k == BTF_KIND_ARRAY:
        head += f" type_id={t.elem_type} index_type_id={t.index_type} nr_elems={t.nelems}"
    elif k in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        head += f" size={t.size} vlen={t.vlen}"
        for m in t.members:
            line = f"\t{_q(m.name)} type_id={m.type} bits_offset={m.bit_offset}"
            if m.bitfield_size:
                line += f" bitfield_size={m.bitfield_size}"
            lines.append(line)
    elif k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
        head += f" encoding={'SIGNED' if t.kflag else 'UNSIGNED'} size={t.size} vlen={t.vlen}"
        suffix = ("LL" if t.kflag else "ULL") if k == BTF_KIND_ENUM64 else ""
        lines += [f"\t{_q(v.name)} val={v.value}{suffix}" for v in t.values]
    elif k == BTF_KIND_FWD:
        head += f" fwd_kind={'union' if t.kflag else 'struct'}"
    elif k == BTF_KIND_FUNC:
        head += f" type_id={t.type} linkage={_LINKAGE.get(t.linkage, '(unknown)')}"
    elif k == BTF_KIND_FUNC_PROTO:
        head += f" ret_type_id={t.type} vlen={t.vlen}"
        lines += [f"\t{_q(p.name)} type_id={p.type}" for p in t.params]
    elif k == BTF_KIND_VAR:
        head += f" type_id={t.type}, linkage={_LINKAGE.get(t.linkage, '(unknown)')}"
    elif k == BTF_KIND_DATASEC:
        head += f" size={t.size} vlen={t.vlen}"
        for s in t.secinfos:
            v = btf.type(s.type)
            lines.append(f"\ttype_id={s.type} offset={s.offset} size={s.size} "
                         f"({v.kind_name} {_q(v.name)})")
    elif k == BTF_KIND_FLOAT:
        head += f" size={t.size}"
    elif k == BTF_KIND_DECL_TAG:
        head += f" type_id={t.type} component_idx={t.component_idx}"
    return [head, *lines]


# ------------------------------------------------------------------ real blobs vs bpftool


@pytest.fixture(scope="module")
def btf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("btf")


@pytest.fixture(scope="module", params=[p.name for p in BLOBS])
def real(request: pytest.FixtureRequest, btf_dir: Path) -> tuple[BTF, dict]:
    """(parsed blob, facts extracted from bpftool's raw dump of it) for one blob."""
    name = request.param
    path = btf_dir / name.replace(".xz", "")
    path.write_bytes(raw_blob(name))
    text = bpftool_dump(path)
    facts: dict = {"count": len(re.findall(r"^\[\d+\] ", text, re.M))}
    m = re.search(r"^\[(\d+)\] STRUCT 'task_struct' size=(\d+) vlen=\d+\n((?:\t.*\n)*)", text,
                  re.M)
    assert m, "bpftool dump has no task_struct"
    facts["task_struct"] = (int(m[1]), int(m[2]))
    facts["members"] = {
        mm[1]: (int(mm[2]), int(mm[3]))
        for mm in re.finditer(r"^\t'(\w+)' type_id=(\d+) bits_offset=(\d+)", m[3], re.M)
    }
    facts["typedefs"] = {
        tp: [int(x) for x in re.findall(rf"^\[(\d+)\] TYPEDEF '{tp}' ", text, re.M)]
        for tp in ("btf_trace_sched_switch", "btf_trace_sched_wakeup",
                   "btf_trace_sched_wakeup_new")
    }
    m = re.search(r"^\[(\d+)\] ENUM 'bpf_func_id' .*\n((?:\t.*\n)*)", text, re.M)
    assert m
    vm = re.search(r"^\t'BPF_FUNC_ktime_get_ns' val=(\d+)", m[2], re.M)
    assert vm
    facts["bpf_func_id"] = (int(m[1]), int(vm[1]))
    facts["path"] = path
    return BTF.from_file(path), facts


@needs_bpftool
def test_type_count(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    assert len(btf) == facts["count"] + 1  # + void, like btf__type_cnt


@needs_bpftool
def test_task_struct(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    ts_id, ts_size = facts["task_struct"]
    assert btf.find("task_struct", BTF_KIND_STRUCT) == [ts_id]
    assert btf.find_one("task_struct", BTF_KIND_STRUCT) == ts_id
    t = btf.type(ts_id)
    assert (t.kind, t.name, t.size) == (BTF_KIND_STRUCT, "task_struct", ts_size)
    assert btf.resolve_size(ts_id) == ts_size
    members = {m.name: m for m in t.members}
    expected = facts["members"]
    for name in ("pid", "tgid", "comm"):
        assert (members[name].type, members[name].bit_offset) == expected[name]
    state = "state" if "state" in expected else "__state"
    assert ("state" in members) != ("__state" in members)  # exactly one of them
    m = members[state]
    assert (m.type, m.bit_offset) == expected[state]
    # 5.10: long state (8 bytes); 5.14+: unsigned int __state (4 bytes)
    assert btf.resolve_size(m.type) == (8 if state == "state" else 4)
    assert btf.resolve_size(members["comm"].type) == 16
    assert btf.type(btf.skip_mods_and_typedefs(members["pid"].type)).kind == BTF_KIND_INT


@needs_bpftool
def test_state_flavor_by_kernel(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    names = {m.name for m in btf.type(facts["task_struct"][0]).members}
    is_510 = "5.10" in facts["path"].name
    assert ("state" in names) == is_510 and ("__state" in names) != is_510


@needs_bpftool
def test_tracepoint_typedefs(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    for name, ids in facts["typedefs"].items():
        assert ids, name
        assert btf.find(name, BTF_KIND_TYPEDEF) == ids
        assert btf.find(name) == ids
        assert btf.type(ids[0]).kind_name == "TYPEDEF"
        # typedef -> PTR -> FUNC_PROTO, as tp_btf attach needs
        target = btf.type(btf.type(ids[0]).type)
        assert target.kind == BTF_KIND_PTR
        assert btf.type(target.type).kind == BTF_KIND_FUNC_PROTO


@needs_bpftool
def test_enum_value(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    enum_id, value = facts["bpf_func_id"]
    assert btf.find_one("bpf_func_id", BTF_KIND_ENUM) == enum_id
    values = {v.name: v.value for v in btf.type(enum_id).values}
    assert values["BPF_FUNC_ktime_get_ns"] == value


@needs_bpftool
def test_find_prefix_and_misses(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    ids = btf.find_prefix("btf_trace_sched_wakeup")
    want = facts["typedefs"]["btf_trace_sched_wakeup"] + facts["typedefs"][
        "btf_trace_sched_wakeup_new"]
    assert set(want) <= set(ids)
    assert all(btf.type(i).name.startswith("btf_trace_sched_wakeup") for i in ids)
    assert btf.find_prefix("task_struct___") == []
    assert btf.find("task_struct___x") == []
    assert btf.find("no such type \u20ac") == []
    assert btf.find("task_struct", BTF_KIND_UNION) == []
    with pytest.raises(BTFError, match="STRUCT 'no_such_struct' not found"):
        btf.find_one("no_such_struct", BTF_KIND_STRUCT)


@needs_bpftool
def test_from_file_xz_equals_raw(real: tuple[BTF, dict]) -> None:
    btf, facts = real
    xz = BTF.from_file(BTF_DIR / (facts["path"].name + ".xz"))
    assert len(xz) == len(btf)
    ts = facts["task_struct"][0]
    assert xz.type(ts) == btf.type(ts)


@needs_bpftool
def test_every_type_matches_bpftool(btf_dir: Path) -> None:
    """All 126k types of the 6.18 blob, rendered as bpftool does, equal its raw dump."""
    path = btf_dir / "broad.btf"
    path.write_bytes(raw_blob(BROAD_BLOB))
    dump = split_dump(bpftool_dump(path))
    btf = BTF.from_file(path)
    assert len(btf) == len(dump) + 1
    bad = []
    for t in btf.iter_types():
        if render(btf, t) != dump[t.id]:
            bad.append((render(btf, t), dump[t.id]))
            if len(bad) > 5:
                break
    assert not bad
    # name look-up agrees with the dump for a sample of names, kinds included
    names: dict[tuple[str, str], list[int]] = {}
    for tid, lines in dump.items():
        m = re.match(r"\[\d+\] (\w+) '([^']*)'", lines[0])
        assert m
        names.setdefault((m[2], m[1]), []).append(tid)
    kind_of = {v: k for k, v in KIND_NAMES.items()}
    sample = [key for i, key in enumerate(sorted(names)) if i % 97 == 0 and key[0] != "(anon)"]
    for name, kind in sample:
        assert btf.find(name, kind_of[kind]) == names[name, kind], (name, kind)


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="no kernel BTF")
def test_kernel() -> None:
    btf = BTF.kernel()
    assert len(btf) > 1000
    assert btf.find_one("task_struct", BTF_KIND_STRUCT) > 0


# ------------------------------------------------------------------ encoder


def build_all_kinds() -> tuple[BTFBuilder, list[Type]]:
    """A builder with every add_* used, and the Types the parser must return for them."""
    b = BTFBuilder()
    exp: list[Type] = []

    def add(t: Type, got: int) -> int:
        assert got == t.id
        exp.append(t)
        return got

    i_int = add(Type(1, BTF_KIND_INT, "int", 0, False, size=4, int_encoding=BTF_INT_SIGNED,
                     int_bits=32), b.add_int("int", 4, signed=True))
    add(Type(2, BTF_KIND_INT, "char", 0, False, size=1, int_encoding=BTF_INT_CHAR, int_bits=8),
        b.add_int("char", 1, char=True))
    add(Type(3, BTF_KIND_INT, "_Bool", 0, False, size=1, int_encoding=BTF_INT_BOOL, int_bits=8),
        b.add_int("_Bool", 1, bool_=True))
    u64 = add(Type(4, BTF_KIND_INT, "unsigned long", 0, False, size=8, int_bits=64),
              b.add_int("unsigned long", 8))
    add(Type(5, BTF_KIND_PTR, "", 0, False, type=i_int), b.add_ptr(i_int))
    add(Type(6, BTF_KIND_CONST, "", 0, False, type=i_int), b.add_const(i_int))
    add(Type(7, BTF_KIND_VOLATILE, "", 0, False, type=6), b.add_volatile(6))
    add(Type(8, BTF_KIND_RESTRICT, "", 0, False, type=5), b.add_restrict(5))
    add(Type(9, BTF_KIND_TYPE_TAG, "user", 0, False, type=i_int), b.add_type_tag("user", i_int))
    add(Type(10, BTF_KIND_TYPEDEF, "pid_t", 0, False, type=7), b.add_typedef("pid_t", 7))
    add(Type(11, BTF_KIND_ARRAY, "", 0, False, elem_type=2, index_type=i_int, nelems=16),
        b.add_array(2, i_int, 16))
    add(Type(12, BTF_KIND_STRUCT, "task", 3, False, size=32, members=(
        Member("pid", 10, 0, 0), Member("comm", 11, 32, 0), Member("next", 13, 192, 0))),
        b.add_struct("task", 32, [("pid", 10, 0), ("comm", 11, 32), ("next", 13, 192)]))
    add(Type(13, BTF_KIND_PTR, "", 0, False, type=12), b.add_ptr(12))
    add(Type(14, BTF_KIND_UNION, "bits", 3, True, size=4, members=(
        Member("a", i_int, 0, 3), Member("b", i_int, 3, 5), Member("", i_int, 0, 0))),
        b.add_union("bits", 4, [("a", i_int, 0, 3), ("b", i_int, 3, 5), ("", i_int, 0)]))
    add(Type(15, BTF_KIND_ENUM, "color", 2, False, size=4, values=(
        EnumValue("RED", 0), EnumValue("BIG", 0xFFFFFFFF))),
        b.add_enum("color", 4, [("RED", 0), ("BIG", 0xFFFFFFFF)]))
    add(Type(16, BTF_KIND_ENUM, "sign", 2, True, size=4, values=(
        EnumValue("NEG", -5), EnumValue("POS", 7))),
        b.add_enum("sign", 4, [("NEG", -5), ("POS", 7)]))
    add(Type(17, BTF_KIND_ENUM64, "e64", 2, False, size=8, values=(
        EnumValue("HUGE", 1 << 63), EnumValue("ONE", 1))),
        b.add_enum("e64", 8, [("HUGE", 1 << 63), ("ONE", 1)]))
    add(Type(18, BTF_KIND_ENUM64, "s64", 1, True, size=8, values=(EnumValue("MIN", -(1 << 63)),)),
        b.add_enum("s64", 8, [("MIN", -(1 << 63))], signed=True))
    add(Type(19, BTF_KIND_FWD, "later", 0, False), b.add_fwd("later"))
    add(Type(20, BTF_KIND_FWD, "ulater", 0, True), b.add_fwd("ulater", union=True))
    proto = add(Type(21, BTF_KIND_FUNC_PROTO, "", 3, False, type=i_int, params=(
        Param("ctx", 13), Param("n", u64), Param("", 0))),
        b.add_func_proto(i_int, [("ctx", 13), ("n", u64), ("", 0)]))
    f1 = add(Type(22, BTF_KIND_FUNC, "handler", BTF_FUNC_GLOBAL, False, type=proto,
                  linkage=BTF_FUNC_GLOBAL), b.add_func("handler", proto))
    add(Type(23, BTF_KIND_FUNC, "helper", BTF_FUNC_STATIC, False, type=proto,
             linkage=BTF_FUNC_STATIC), b.add_func("helper", proto, BTF_FUNC_STATIC))
    add(Type(24, BTF_KIND_FUNC, "ext", BTF_FUNC_EXTERN, False, type=proto,
             linkage=BTF_FUNC_EXTERN), b.add_func("ext", proto, BTF_FUNC_EXTERN))
    v1 = add(Type(25, BTF_KIND_VAR, "min_us", 0, False, type=6,
                  linkage=BTF_VAR_GLOBAL_ALLOCATED), b.add_var("min_us", 6))
    v2 = add(Type(26, BTF_KIND_VAR, "counter", 0, False, type=u64, linkage=BTF_VAR_STATIC),
             b.add_var("counter", u64, BTF_VAR_STATIC))
    add(Type(27, BTF_KIND_VAR, "ext_var", 0, False, type=i_int, linkage=BTF_VAR_GLOBAL_EXTERN),
        b.add_var("ext_var", i_int, BTF_VAR_GLOBAL_EXTERN))
    add(Type(28, BTF_KIND_DATASEC, ".rodata", 2, False, size=16, secinfos=(
        VarSecinfo(v1, 0, 4), VarSecinfo(v2, 8, 8))),
        b.add_datasec(".rodata", 16, [(v1, 0, 4), (v2, 8, 8)]))
    add(Type(29, BTF_KIND_FLOAT, "double", 0, False, size=8), b.add_float("double", 8))
    add(Type(30, BTF_KIND_DECL_TAG, "kfunc", 0, False, type=f1, component_idx=-1),
        b.add_decl_tag("kfunc", f1))
    add(Type(31, BTF_KIND_DECL_TAG, "arg", 0, False, type=f1, component_idx=1),
        b.add_decl_tag("arg", f1, 1))
    add(Type(32, BTF_KIND_STRUCT, "task", 0, False, size=0), b.add_struct("task", 0, []))
    return b, exp


def test_encoder_round_trip() -> None:
    b, exp = build_all_kinds()
    data = b.encode()
    assert struct.unpack_from("<HBBI", data) == (0xEB9F, 1, 0, 24)
    btf = BTF.from_bytes(data)
    assert len(btf) == len(b) == len(exp) + 1
    assert [btf.type(t.id) for t in exp] == exp
    assert {t.kind for t in exp} == set(KIND_NAMES) - {0}  # every kind covered
    big = BTF.from_bytes(b.encode("big"))
    assert big.byteorder == "big"
    assert [big.type(t.id) for t in exp] == exp
    # look-ups on the small blob
    assert btf.find("task") == [12, 32]
    assert btf.find("task", BTF_KIND_STRUCT) == [12, 32]
    assert btf.find("pid_t") == [10]
    assert btf.find("") == [5, 6, 7, 8, 11, 13, 21]  # anonymous types
    assert btf.find_prefix("e") == [17, 24, 27]
    assert btf.skip_mods_and_typedefs(10) == i_int_id(btf)
    assert btf.resolve_size(10) == 4
    assert btf.resolve_size(11) == 16
    assert btf.resolve_size(13) == 8
    assert btf.resolve_size(25) == 4  # VAR -> CONST -> int
    with pytest.raises(BTFError):
        btf.resolve_size(0)  # void has no size
    with pytest.raises(BTFError):
        btf.resolve_size(21)  # nor a FUNC_PROTO
    # strings are deduplicated: "task" stored once
    assert data.count(b"\0task\0") == 1


def i_int_id(btf: BTF) -> int:
    return btf.find_one("int", BTF_KIND_INT)


@needs_bpftool
def test_encoder_bpftool_agrees(tmp_path: Path) -> None:
    b, _ = build_all_kinds()
    btf = BTF.from_bytes(b.encode())
    want = [line for t in btf.iter_types() for line in render(btf, t)]
    for order in ("little", "big"):
        path = tmp_path / f"enc-{order}.btf"
        path.write_bytes(b.encode(order))
        assert bpftool_dump(path).splitlines() == want


def test_encoder_rejects_bad_input() -> None:
    b = BTFBuilder()
    with pytest.raises(BTFError):
        b.add_enum("e", 4, [("X", 1 << 32)])
    with pytest.raises(BTFError):
        b.add_int("i", 3)
    with pytest.raises(BTFError):
        b.add_struct("s", 4, [("a", 1, 1 << 24, 1)])
    with pytest.raises(BTFError):
        b.add_struct("s", 4, [(f"m{i}", 1, 0) for i in range(0x10000)])
    with pytest.raises(BTFError):
        b.add_string("a\0b")
    with pytest.raises(ValueError):
        b.encode("middle")


# ------------------------------------------------------------------ split BTF


def make_split() -> tuple[BTF, bytes]:
    """Base: int; split (written by hand): PTR -> int, STRUCT 'foo' {int x}, TYPEDEF 'int'."""
    base = BTF.from_bytes(base_blob())
    base_strlen = len(base_blob()) - 24 - 16  # header, one INT record (4 words)
    strings = b"foo\0x\0"
    foo, x = base_strlen, base_strlen + 4
    words = [0, BTF_KIND_PTR << 24, 1,
             foo, BTF_KIND_STRUCT << 24 | 1, 4, x, 1, 0,
             1, BTF_KIND_TYPEDEF << 24, 3]  # name_off 1 = "int" in the base strings
    types = struct.pack(f"<{len(words)}I", *words)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return base, hdr + types + strings


def test_split_btf(tmp_path: Path) -> None:
    base, data = make_split()
    split = BTF.from_bytes(data, base=base)
    assert len(split) == 5 and split.start_id == 2
    assert split.type(1).name == "int"
    assert split.type(2).type == 1
    assert split.type(3).members == (Member("x", 1, 0, 0),)
    assert split.find("int") == [1, 4]
    assert split.find("foo", BTF_KIND_STRUCT) == [3]
    assert split.resolve_size(4) == 4
    with pytest.raises(BTFError):
        split.type(5)
    if shutil.which("bpftool"):
        (tmp_path / "base").write_bytes(base_blob())
        (tmp_path / "split").write_bytes(data)
        out = subprocess.run(["bpftool", "btf", "dump", "-B", str(tmp_path / "base"), "file",
                              str(tmp_path / "split"), "format", "raw"],
                             capture_output=True, text=True, check=True).stdout
        want = [line for i in range(2, 5) for line in render(split, split.type(i))]
        assert out.splitlines() == want


def base_blob() -> bytes:
    b = BTFBuilder()
    b.add_int("int", 4, signed=True)
    return b.encode()


# ------------------------------------------------------------------ ELF


def make_elf(btf_data: bytes, bits: int = 64, order: str = "<") -> bytes:
    """A minimal relocatable ELF with sections: null, .shstrtab, .BTF."""
    shstr = b"\0.shstrtab\0.BTF\0"
    ehsize, shentsize = (64, 64) if bits == 64 else (52, 40)
    shstr_off = ehsize
    btf_off = shstr_off + len(shstr)
    shoff = btf_off + len(btf_data)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if order == "<" else 2, 1]) + bytes(9)
    if bits == 64:
        eh = ident + struct.pack(order + "HHIQQQIHHHHHH", 1, 247, 1, 0, 0, shoff, 0, ehsize, 0,
                                 0, shentsize, 3, 1)
        sh = struct.pack(order + "IIQQQQIIQQ", *[0] * 10)
        sh += struct.pack(order + "IIQQQQIIQQ", 1, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
        sh += struct.pack(order + "IIQQQQIIQQ", 11, 1, 0, 0, btf_off, len(btf_data), 0, 0, 4, 0)
    else:
        eh = ident + struct.pack(order + "HHIIIIIHHHHHH", 1, 247, 1, 0, 0, shoff, 0, ehsize, 0,
                                 0, shentsize, 3, 1)
        sh = struct.pack(order + "10I", *[0] * 10)
        sh += struct.pack(order + "10I", 1, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
        sh += struct.pack(order + "10I", 11, 1, 0, 0, btf_off, len(btf_data), 0, 0, 4, 0)
    return eh + shstr + btf_data + sh


@pytest.mark.parametrize("bits,order", [(64, "<"), (32, "<"), (64, ">")])
def test_elf_btf_section(tmp_path: Path, bits: int, order: str) -> None:
    b, exp = build_all_kinds()
    path = tmp_path / "obj.o"
    path.write_bytes(make_elf(b.encode(), bits, order))
    btf = BTF.from_file(path)
    assert [btf.type(t.id) for t in exp] == exp


def test_elf_without_btf(tmp_path: Path) -> None:
    data = make_elf(b"")
    path = tmp_path / "nobtf.o"
    path.write_bytes(data.replace(b".BTF\0", b".XYZ\0"))
    with pytest.raises(BTFError, match="no .BTF section"):
        BTF.from_file(path)
    path.write_bytes(data[:70])
    with pytest.raises(BTFError):
        BTF.from_file(path)


# ------------------------------------------------------------------ errors


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(BTFError, match="CONFIG_DEBUG_INFO_BTF"):
        BTF.kernel(tmp_path / "vmlinux")
    with pytest.raises(BTFError, match="cannot read BTF"):
        BTF.from_file(tmp_path / "missing")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(BTFError, match="too short"):
        BTF.from_file(tmp_path / "empty")
    with pytest.raises(BTFError):
        BTF.kernel(tmp_path / "empty")
    (tmp_path / "bad.xz").write_bytes(b"\xfd7zXZ\x00garbage")
    with pytest.raises(BTFError, match="xz"):
        BTF.from_file(tmp_path / "bad.xz")
    with pytest.raises(BTFError, match="cannot read"):
        BTF.from_file(tmp_path)  # a directory


def _patch_word(data: bytes, type_id: int, word: int, value: int) -> bytes:
    """Replace u32 word ``word`` of type ``type_id``'s record in a little-endian blob."""
    btf = BTF.from_bytes(data)
    pos = 24 + 4 * (btf._offs[type_id - 1] + word)
    return data[:pos] + struct.pack("<I", value) + data[pos + 4:]


def test_specific_errors() -> None:
    b, _ = build_all_kinds()
    data = b.encode()
    with pytest.raises(BTFError, match="magic"):
        BTF.from_bytes(b"\0" * 24)
    with pytest.raises(BTFError, match="version"):
        BTF.from_bytes(data[:2] + b"\x02" + data[3:])
    with pytest.raises(BTFError, match="hdr_len"):
        BTF.from_bytes(data[:4] + struct.pack("<I", 12) + data[8:])
    with pytest.raises(BTFError, match="out of bounds"):
        BTF.from_bytes(data[:-1])
    with pytest.raises(BTFError, match="kind 25"):
        BTF.from_bytes(_patch_word(data, 3, 1, 25 << 24))
    with pytest.raises(BTFError, match="kind 0"):
        BTF.from_bytes(_patch_word(data, 3, 1, 0))
    with pytest.raises(BTFError, match="truncated"):
        BTF.from_bytes(_patch_word(data, 12, 1, BTF_KIND_STRUCT << 24 | 500))
    btf = BTF.from_bytes(_patch_word(data, 12, 0, 1 << 30))  # name offset far out of range
    with pytest.raises(BTFError, match="string offset"):
        btf.type(12)
    for bad in (-1, len(btf), 1 << 40):
        with pytest.raises(BTFError, match="out of range"):
            btf.type(bad)
    # TYPEDEF pid_t (10) pointing to itself; ARRAY (11) of one element of itself
    looped = _patch_word(_patch_word(data, 10, 2, 10), 11, 3, 11)
    btf = BTF.from_bytes(_patch_word(looped, 11, 5, 1))
    with pytest.raises(BTFError, match="loop"):
        btf.skip_mods_and_typedefs(10)
    with pytest.raises(BTFError):
        btf.resolve_size(10)
    with pytest.raises(BTFError, match="deeper"):
        btf.resolve_size(11)
    with pytest.raises(BTFError, match="overflow"):
        BTF.from_bytes(looped).resolve_size(11)  # 16 ** n elements
    # a name that is not UTF-8
    bad_utf8 = data.replace(b"\0pid_t\0", b"\0pid\xfft\0")
    with pytest.raises(BTFError, match="UTF-8"):
        BTF.from_bytes(bad_utf8).type(10)
    # an array whose size overflows u32
    ov = BTFBuilder()
    ov.add_int("int", 4)
    ov.add_array(1, 1, 1 << 31)
    with pytest.raises(BTFError, match="overflow"):
        BTF.from_bytes(ov.encode()).resolve_size(2)


# ------------------------------------------------------------------ malformed input fuzzing


def exercise(data: bytes) -> None:
    """Parse ``data`` and use every API on it: only BTFError may come out."""
    try:
        btf = BTF.from_bytes(data)
    except BTFError:
        return
    for tid in range(len(btf) + 1):
        for op in (btf.type, btf.skip_mods_and_typedefs, btf.resolve_size, btf.name_of,
                   btf.kind_of):
            try:
                op(tid)
            except BTFError:
                pass
    for name in ("int", "task_struct", ""):
        btf.find(name)
        btf.find_prefix(name[:3])


@functools.cache
def encoded_blob() -> bytes:
    return build_all_kinds()[0].encode()


@functools.cache
def real_slice(ntypes: int = 300) -> bytes:
    """The first ``ntypes`` types of a real blob with the strings they use, re-headed."""
    data = raw_blob(SMALL_BLOB)
    btf = BTF.from_bytes(data)
    tlen = 4 * btf._offs[ntypes]
    _, _, _, hdr_len, type_off, _, str_off, _ = struct.unpack_from("<HBBIIIII", data)
    types = data[hdr_len + type_off:hdr_len + type_off + tlen]
    ss = hdr_len + str_off
    used = 0  # the largest string offset the kept types use
    for tid in range(1, ntypes + 1):
        t = btf.type(tid)
        names = [t.name] + [x.name for x in (*t.members, *t.values, *t.params)]
        for name in names:
            if name:
                used = max(used, data.index(b"\0" + name.encode() + b"\0", ss) + 1 - ss)
    strings = data[ss:data.index(b"\0", ss + used) + 1]
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_real_slice_parses() -> None:
    btf = BTF.from_bytes(real_slice())
    assert len(btf) == 301
    full = BTF.from_bytes(raw_blob(SMALL_BLOB))
    for tid in range(1, 301):
        assert btf.type(tid) == full.type(tid)


@pytest.mark.parametrize("which", ["encoded", "real_slice"])
def test_every_truncation(which: str) -> None:
    data = encoded_blob() if which == "encoded" else real_slice()
    stop = len(data) if which == "encoded" else 24 + 4000
    for n in range(stop):
        with pytest.raises(BTFError):
            BTF.from_bytes(data[:n])
    # truncations that keep the header consistent: cut the type section at every word
    _, _, _, _, _, type_len, _, str_len = struct.unpack_from("<HBBIIIII", data)
    strings = data[24 + type_len:]
    for cut in range(0, min(type_len, 4000), 4):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, cut, cut, str_len)
        exercise(hdr + data[24:24 + cut] + strings)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_corruption(data: st.DataObject) -> None:
    blob = data.draw(st.sampled_from(["encoded", "real_slice"]))
    raw = bytearray(encoded_blob() if blob == "encoded" else real_slice())
    type_len = struct.unpack_from("<I", raw, 12)[0]
    limit = min(len(raw), 24 + type_len + 64)  # mostly header and type records
    flips = data.draw(st.lists(st.tuples(st.integers(0, limit - 1), st.integers(0, 255)),
                               min_size=1, max_size=8))
    for pos, val in flips:
        raw[pos] = val
    cut = data.draw(st.integers(24, len(raw)))
    exercise(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


def test_records_are_values() -> None:
    m = Member("a", 1, 2, 3)
    assert m == Member(name="a", type=1, bit_offset=2, bitfield_size=3)
    assert hash(m) == hash(Member("a", 1, 2, 3))
    assert m != Member("a", 1, 2, 4)
    assert repr(m) == "Member(name='a', type=1, bit_offset=2, bitfield_size=3)"
    with pytest.raises(AttributeError):
        m.name = "b"  # type: ignore[misc]
    t = Type(1, BTF_KIND_STRUCT, "s", 1, False, size=4, members=(m,))
    assert t.kind_name == "STRUCT"
    assert t._replace(size=8).size == 8
    import pickle

    assert pickle.loads(pickle.dumps(t)) == t
