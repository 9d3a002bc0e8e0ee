"""runqslower relocated against every reference kernel, checked against bpftool.

The oracle is ``bpftool btf dump file F format raw`` (not our parser): the
offsets of ``task_struct.pid``, ``.tgid``, ``.comm`` and the state field, and
the state field's width, must be what the relocated instructions carry.
Local offsets differ from every kernel's, so skipping relocation fails here.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pybpf import isa
from pybpf.btf import BTF
from pybpf.object import prepare
from pybpf.programs import runqslower

pytestmark = pytest.mark.oracle("bpftool")

BLOBS = sorted((Path(__file__).resolve().parent.parent / "btf").glob("*.btf.xz"))
LINE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
MEMBER = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)")


def bpftool_raw(path: Path) -> list[str]:
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is not installed (.ci/run installs it)")
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(path), "format", "raw"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.splitlines()


class RawDump:
    """Just enough of bpftool's raw dump: type lines by id, members of a struct."""

    def __init__(self, lines: list[str]) -> None:
        self.types: dict[int, tuple[str, str, str]] = {}
        self.members: dict[int, list[tuple[str, int, int]]] = {}
        current = None
        for line in lines:
            m = LINE.match(line)
            if m:
                current = int(m.group(1))
                self.types[current] = (m.group(2), m.group(3), m.group(4))
                continue
            mm = MEMBER.match(line)
            if mm and current is not None:
                self.members.setdefault(current, []).append(
                    (mm.group(1), int(mm.group(2)), int(mm.group(3)))
                )

    def struct(self, name: str) -> int:
        (tid,) = [i for i, (k, n, _) in self.types.items() if k == "STRUCT" and n == name]
        return tid

    def size_of(self, tid: int) -> int:
        while True:
            kind, _, rest = self.types[tid]
            if kind in ("TYPEDEF", "CONST", "VOLATILE"):
                tid = int(re.search(r"type_id=(\d+)", rest).group(1))
                continue
            if kind == "PTR":
                return 8
            if kind == "ARRAY":
                elem = int(re.search(r" type_id=(\d+)", rest).group(1))
                return int(re.search(r"nr_elems=(\d+)", rest).group(1)) * self.size_of(elem)
            return int(re.search(r"size=(\d+)", rest).group(1))

    def field(self, struct_name: str, member: str) -> tuple[int, int]:
        """(byte offset, byte size) of a member."""
        for name, tid, bits in self.members[self.struct(struct_name)]:
            if name == member:
                assert bits % 8 == 0
                return bits // 8, self.size_of(tid)
        raise KeyError(member)

    def has_field(self, struct_name: str, member: str) -> bool:
        return any(n == member for n, _, _ in self.members[self.struct(struct_name)])


@pytest.fixture(scope="module", params=BLOBS, ids=[b.name.split(".btf")[0] for b in BLOBS])
def kernel(request, tmp_path_factory):
    raw = tmp_path_factory.mktemp("btf") / "vmlinux.btf"
    raw.write_bytes(lzma.decompress(request.param.read_bytes()))
    return BTF.from_file(request.param), RawDump(bpftool_raw(raw)), request.param.name


def test_blobs_present():
    assert len(BLOBS) == 5


def _program(prepared, name):
    (prog,) = [p for p in prepared.programs if p.name == name]
    return prog


def _loads_through(prog, field_name: str, root: str):
    """Relocated instructions whose byte_off relocation names root.field."""
    by_insn = {
        r.insn: r
        for r in prog.relocations
        if r.type == root and r.field == field_name and r.kind == "byte_off"
    }
    slot = 0
    found = []
    for insn in prog.insns:
        if slot in by_insn:
            found.append((insn, by_insn[slot]))
        slot += insn.slots
    return found


def test_offsets_match_bpftool(kernel):
    btf, dump, blob = kernel
    prepared = prepare(runqslower.build_object(), btf)
    switch = _program(prepared, "sched_switch")
    wakeup = _program(prepared, "sched_wakeup")
    for field_name in ("pid", "tgid"):
        offset, size = dump.field("task_struct", field_name)
        for prog in (switch, wakeup):
            loads = _loads_through(prog, field_name, "task_struct")
            assert loads, f"{prog.name} reads no task_struct.{field_name}"
            for insn, relo in loads:
                assert insn.cls == isa.BPF_LDX
                assert (insn.off, insn.mem_size) == (offset, size), (blob, field_name)
                assert relo.target == offset
    comm_offset, _ = dump.field("task_struct", "comm")
    comm = _loads_through(switch, "comm", "task_struct")
    assert comm and all(insn.imm == comm_offset for insn, _ in comm)


def test_state_field_flavor(kernel):
    """5.10 has `long state` (8 bytes); 5.14+ kernels `unsigned int __state` (4)."""
    btf, dump, blob = kernel
    prepared = prepare(runqslower.build_object(), btf)
    switch = _program(prepared, "sched_switch")
    new = dump.has_field("task_struct", "__state")
    assert new == (not blob.startswith("debian-5.10"))
    (exists,) = [r for r in switch.relocations if r.kind == "field_exists"]
    assert exists.target == int(new)
    live, dead = ("__state", "state") if new else ("state", "__state")
    offset, size = dump.field("task_struct", live)
    assert size == (4 if new else 8)
    ((insn, relo),) = _loads_through(switch, live, "task_struct___x" if new else "task_struct___o")
    assert (insn.off, insn.mem_size) == (offset, size)
    # The other flavor's load is poisoned like libbpf does: unreachable here.
    ((poisoned, relo),) = _loads_through(
        switch, dead, "task_struct___o" if new else "task_struct___x"
    )
    assert relo.target is None
    assert poisoned.opcode == isa.BPF_JMP | isa.BPF_CALL and poisoned.imm == 0xBAD2310


def test_helper_numbers_from_btf(kernel):
    btf, dump, _ = kernel
    prepared = prepare(runqslower.build_object(), btf)
    (enum_id,) = [i for i, (k, n, _) in dump.types.items() if k == "ENUM" and n == "bpf_func_id"]
    del enum_id  # values are not in the type line; compare through our parser's view
    calls = [i for i in _program(prepared, "sched_switch").insns if i.helper]
    assert {i.helper for i in calls} >= {"ktime_get_ns", "map_lookup_elem", "perf_event_output"}
    values = {v.name: v.value for v in btf.type(btf.find("bpf_func_id")[0]).values}
    for insn in calls:
        assert insn.imm == values["BPF_FUNC_" + insn.helper] > 0


def test_attach_btf_ids_match_bpftool(kernel):
    btf, dump, _ = kernel
    prepared = prepare(runqslower.build_object(), btf)
    for prog in prepared.programs:
        (tid,) = [
            i for i, (k, n, _) in dump.types.items()
            if k == "TYPEDEF" and n == "btf_trace_" + prog.attach_point
        ]  # fmt: skip
        assert prog.attach_btf_id == tid
