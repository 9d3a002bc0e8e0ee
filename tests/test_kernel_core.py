"""pybpf's CO-RE answers == the kernel's own CO-RE (BPF_PROG_LOAD with core_relos, 5.17+).

The kernel runs libbpf's relo_core.c.  Each runqslower program is loaded a
second time *unrelocated*, with program BTF, func_info and core_relos; the
verifier log (level 2) says what the kernel patched.  That must be exactly
what pybpf's engine computed.
"""

from __future__ import annotations

import argparse
import re

import pytest

from pybpf.btf import BTF
from pybpf.loader import LoadedObject
from pybpf.object import kernel_core_request, prepare
from pybpf.programs import runqslower

pytestmark = pytest.mark.kernel

PATCHED = re.compile(
    r"relo #(\d+): patched insn #(\d+) \((?:LDX/ST/STX|ALU/ALU64)\) \w+ (\d+) -> (\d+)"
)
POISONED = re.compile(r"relo #(\d+): substituting insn #(\d+) w/ invalid insn")


@pytest.fixture
def loaded(need_root):
    btf = BTF.kernel()
    spec = runqslower.build_object()
    prepared = prepare(spec, btf)
    args = argparse.Namespace(min_us=10, tid=None, pid=None, comm=None)
    with LoadedObject(prepared, runqslower.TOOL.rodata(args)) as obj:
        obj.load()
        yield obj, spec, btf


def declares_core_relos(btf: BTF) -> bool:
    """Whether the kernel's own ``union bpf_attr`` has ``core_relos`` (BPF_PROG_LOAD's
    CO-RE relocations, 5.17)."""
    pending = list(btf.find("bpf_attr"))
    while pending:
        t = btf.type(btf.skip_mods_and_typedefs(pending.pop()))
        for m in t.members:
            if m.name == "core_relos":
                return True
            if not m.name:
                pending.append(m.type)
    return False


@pytest.mark.parametrize("name", ["sched_wakeup", "sched_switch"])
def test_kernel_relocates_like_pybpf(loaded, name):
    obj, spec, btf = loaded
    (prog,) = [p for p in obj.prepared.programs if p.name == name]
    if not declares_core_relos(btf):
        # Before 5.17 the kernel does not know the attribute: refused, not ignored.
        from pybpf.errors import BPFSyscallError

        with pytest.raises(BPFSyscallError, match=r"E2BIG.*does not know an attribute"):
            obj.load_kernel_relocated(prog, kernel_core_request(spec, name, btf))
        return
    fd, log = obj.load_kernel_relocated(prog, kernel_core_request(spec, name, btf))
    fd.close()
    kernel: dict[int, object] = {}
    for m in PATCHED.finditer(log):
        kernel[int(m.group(2))] = (int(m.group(3)), int(m.group(4)))
    for m in POISONED.finditer(log):
        kernel[int(m.group(2))] = "poisoned"
    assert prog.relocations, "no relocations to compare"
    ours: dict[int, object] = {
        r.insn: "poisoned" if r.target is None else (r.local, r.target) for r in prog.relocations
    }
    assert kernel == ours, log[-3000:]


def test_reachable_poisoned_relocation_is_explained(loaded):
    """A load through a field this kernel lacks, on a path the verifier takes: the
    error names program, instruction, type, field and why (not just unknown#195896080)."""
    from pybpf.asm import R0, R1, R6, Asm
    from pybpf.cdecl import Struct, u32
    from pybpf.errors import VerifierError
    from pybpf.object import ObjectSpec, ProgramSpec

    ghost = Struct("task_struct___ghost", [("no_such_field", u32)])
    a = Asm()
    a.call("get_current_task").mov(R6, R0)  # 4.8: every kernel
    a.ldx_core(R1, R6, ghost.no_such_field)
    a.mov(R0, 0).exit()
    spec = ObjectSpec("ghost", [ProgramSpec("ghost_reader", "raw_tp/sys_enter", a.assemble())])
    prepared = prepare(spec, BTF.kernel())
    with LoadedObject(prepared) as obj, pytest.raises(VerifierError) as err:
        obj.load()
    msg = str(err.value)
    for word in ("ghost_reader", "insn 2", "task_struct___ghost.no_such_field", "byte_off",
                 "no member 'no_such_field'"):  # fmt: skip
        assert word in msg, msg
