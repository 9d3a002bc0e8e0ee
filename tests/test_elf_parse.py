"""pybpf.elf offline, on the real objects of libbpf-tools: the ELF reader against
pyelftools, the section table against the kernel's enum bpf_attach_type, the linker's
output against the objects' own func_info and symbols, libbpf's naming rules."""

from __future__ import annotations

import os

import bpf_objects
import pytest
from policy import unavailable

from pybpf import isa
from pybpf.btf import BTF, BTF_KIND_ENUM
from pybpf.core import parse_spec
from pybpf.elf import internal_map_name, open_file
from pybpf.elf.reader import ElfFile
from pybpf.elf.sections import ATTACH, find_section_def

OBJECTS = bpf_objects.objects()
BTF_618 = os.path.join(os.path.dirname(__file__), "..", "btf")


def _need_objects() -> None:
    if not OBJECTS:
        if os.environ.get("CI") == "true":
            pytest.fail("libbpf-tools is a CI oracle (apt-get install libbpf-tools)")
        unavailable("needs Debian's libbpf-tools")


NAMES = sorted(OBJECTS) or ["runqslower"]


@pytest.mark.parametrize("name", NAMES)
def test_reader_agrees_with_pyelftools(name: str) -> None:
    _need_objects()
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    path = OBJECTS[name]
    with open(path, "rb") as f:
        data = f.read()
    ours = ElfFile(data, path)
    with open(path, "rb") as f:
        theirs = ELFFile(f)
        secs = list(theirs.iter_sections())
        assert [s.name for s in ours.sections] == [s.name for s in secs]
        assert [(s.size, s.offset) for s in ours.sections] == [
            (s["sh_size"], s["sh_offset"]) for s in secs]
        assert [_SH_TYPES.get(s.type, s.type) for s in ours.sections] == [
            s["sh_type"] for s in secs]
        symtab = theirs.get_section_by_name(".symtab")
        assert [(s.name, s.value, s.size, s.shndx) for s in ours.symbols] == [
            (s.name, s["st_value"], s["st_size"],
             s["st_shndx"] if isinstance(s["st_shndx"], int) else 0)
            for s in symtab.iter_symbols()
        ]  # fmt: skip
        for rel in ours.relocation_sections().values():
            t = theirs.get_section_by_name(rel.name)
            assert isinstance(t, RelocationSection)
            assert [(off, typ, sym.index) for off, typ, sym in ours.relocations(rel)] == [
                (r["r_offset"], r["r_info_type"], r["r_info_sym"]) for r in t.iter_relocations()]


_SH_TYPES = {0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB",
             8: "SHT_NOBITS", 9: "SHT_REL"}  # others: numbers on both sides


@pytest.mark.parametrize("name", NAMES)
def test_programs_linked(name: str) -> None:
    """Each program = its function + every .text function it reaches, once each; every
    call lands on a function start named by func_info; CO-RE records parse."""
    _need_objects()
    obj = open_file(OBJECTS[name])
    elf = ElfFile(open(OBJECTS[name], "rb").read())
    funcs = {s.name: s for s in elf.symbols if s.type == 2 and s.name}
    btf = obj.btf
    assert btf is not None
    for prog in obj.spec.programs:
        starts = isa.subprog_starts(prog.insns)
        fi = [(int.from_bytes(prog.func_info[i:i + 4], "little"),
               int.from_bytes(prog.func_info[i + 4:i + 8], "little"))
              for i in range(0, len(prog.func_info), 8)]  # fmt: skip
        assert [off for off, _ in fi] == starts
        names = [btf.type(tid).name for _, tid in fi]
        assert names[0] == prog.name
        slots = sum(i.slots for i in prog.insns)
        assert slots * 8 == sum(funcs[n].size for n in names)
        assert len(set(names)) == len(names)
        for slot, relo in (prog.core_relos or {}).items():
            parse_spec(btf, relo.type_id, relo.access, relo.kind)
            assert relo.insn == slot
        # line_info sorted, inside the program
        li = [int.from_bytes(prog.line_info[i:i + 4], "little")
              for i in range(0, len(prog.line_info), 16)]  # fmt: skip
        assert li == sorted(li) and all(0 <= x < slots for x in li)


def test_attach_types_are_the_kernels() -> None:
    """The section table's attach types equal the kernel's enum bpf_attach_type (6.18 BTF)."""
    path = os.path.join(BTF_618, [f for f in os.listdir(BTF_618) if "6.18" in f][0])
    btf = BTF.from_file(path)
    (eid,) = btf.find("bpf_attach_type", BTF_KIND_ENUM)
    kernel = {v.name: v.value for v in btf.type(eid).values}
    for name, value in ATTACH.items():
        if name in kernel:
            assert kernel[name] == value, name
    assert len([n for n in ATTACH if n in kernel]) >= 50


@pytest.mark.parametrize("section,kind,sleepable", [
    ("tp_btf/sched_switch", "tp_btf", False), ("?fentry/do_x", "fentry", False),
    ("fentry.s/do_x", "fentry.s", True), ("kprobe", "kprobe", False),
    ("kprobe.multi/x*", "kprobe.multi", False), ("xdp.frags", "xdp.frags", False),
    ("tc", "tc", False), ("perf_event", "perf_event", False), ("cgroup/dev", "cgroup/dev", False),
])  # fmt: skip
def test_section_defs(section: str, kind: str, sleepable: bool) -> None:
    d = find_section_def(section)
    assert d is not None and d.kind == kind and bool(d.prog_flags & 16) == sleepable


def test_unknown_sections() -> None:
    assert find_section_def("kprobex/foo") is None
    assert find_section_def("tpx") is None
    assert find_section_def("tp_btfx/foo") is None


def test_internal_map_names() -> None:
    """libbpf's examples (internal_map_name's comment)."""
    assert internal_map_name("my_object_name", ".rodata") == "my_objec.rodata"
    assert internal_map_name("my_object_name", ".bss") == "my_objec.bss"
    assert internal_map_name("my_object_name", ".kconfig") == "my_obje.kconfig"
    assert internal_map_name("my_object_name", ".rodata.abracadabra") == ".rodata.abracad"
    assert internal_map_name("a-b", ".data") == "a_b.data"


def test_runqslower_object() -> None:
    _need_objects()
    obj = open_file(OBJECTS["runqslower"])
    assert obj.license == "GPL"
    assert {v.name: (v.readonly, v.size) for v in obj.variables.values()} == {
        "min_us": (True, 8), "targ_pid": (True, 4), "targ_tgid": (True, 4)}
    assert [p.section for p in obj.spec.programs][:3] == [
        "tp_btf/sched_wakeup", "tp_btf/sched_wakeup_new", "tp_btf/sched_switch"]
    start = obj.map_spec("start")
    assert (start.key_size, start.value_size, start.max_entries) == (4, 8, 10240)
