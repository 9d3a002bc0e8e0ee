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


@pytest.mark.parametrize("name", ["sched_wakeup", "sched_switch"])
def test_kernel_relocates_like_pybpf(loaded, name):
    obj, spec, btf = loaded
    (prog,) = [p for p in obj.prepared.programs if p.name == name]
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
