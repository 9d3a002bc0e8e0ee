"""runqslower written in the language, compiled and relocated for each reference kernel.

The compiler takes tracepoint arguments and kernel member types from each kernel's own
BTF (Debian 5.10 ... 6.18); the relocated loads must carry the offsets and sizes that
``bpftool btf dump`` (not our parser) gives, and the task state must be read through
the flavor that kernel has.
"""

from __future__ import annotations

import pytest  # noqa: E402
from test_runqslower_relocation import _loads_through, _program, kernel  # noqa: F401

from pybpf import isa
from pybpf.object import prepare
from pybpf.programs import runqslower_lang as rq

pytestmark = pytest.mark.oracle("bpftool")

PROGRAMS = [rq.sched_wakeup, rq.sched_wakeup_new, rq.sched_switch]


def test_offsets_match_bpftool(kernel):  # noqa: F811 - the shared fixture
    btf, dump, blob = kernel
    prepared = prepare(rq.build("runqslower", PROGRAMS, btf).spec, btf)
    switch, wakeup = _program(prepared, "sched_switch"), _program(prepared, "sched_wakeup")
    for field_name in ("pid", "tgid"):
        offset, size = dump.field("task_struct", field_name)
        for prog in (switch, wakeup):
            loads = _loads_through(prog, field_name, "task_struct")
            assert loads, f"{prog.name} reads no task_struct.{field_name}"
            for insn, _relo in loads:
                assert insn.cls == isa.BPF_LDX
                assert (insn.off, insn.mem_size) == (offset, size), (blob, field_name)
    comm_offset, _ = dump.field("task_struct", "comm")
    comm = [insn for insn, _ in _loads_through(switch, "comm", "task_struct")]
    assert comm and all(insn.imm == comm_offset for insn in comm)  # &next->comm
    for i in (0, 7, 15):  # the unrolled filter's byte loads
        ((insn, _),) = _loads_through(switch, f"comm[{i}]", "task_struct")
        assert (insn.off, insn.mem_size) == (comm_offset + i, 1)


def test_state_field_flavor(kernel):  # noqa: F811
    btf, dump, blob = kernel
    prepared = prepare(rq.build("runqslower", PROGRAMS, btf).spec, btf)
    switch = _program(prepared, "sched_switch")
    new = dump.has_field("task_struct", "__state")
    (exists,) = [r for r in switch.relocations if r.kind == "field_exists"]
    assert exists.target == int(new)
    live, dead = ("__state", "state") if new else ("state", "__state")
    offset, size = dump.field("task_struct", live)
    ((insn, _),) = _loads_through(switch, live, "task_struct___x" if new else "task_struct___o")
    assert (insn.off, insn.mem_size) == (offset, size)
    ((poisoned, relo),) = _loads_through(
        switch, dead, "task_struct___o" if new else "task_struct___x"
    )
    assert relo.target is None and poisoned.opcode == isa.BPF_JMP | isa.BPF_CALL
