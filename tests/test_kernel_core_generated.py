"""pybpf's CO-RE == the kernel's own CO-RE on ~2,000 cases drawn from the live vmlinux BTF.

The cases (``test_core_gen.generate``) mirror kernel structs, unions, enums
(enum64 too) and typedefs as local types — bitfields, anonymous members,
arrays, nested structs, typedef/const chains, flavors, missing members and
enumerators, incompatible members — one relocation per (type, member path,
kind), all 13 kinds, as MOV or LD_IMM64.  One raw_tp program carries them
all *unrelocated*; ``BPF_PROG_LOAD`` with ``core_relos`` makes the kernel
(5.17+) relocate it with its copy of libbpf's relo_core.c.  Two read-backs:

* the kernel's log (``relo #N: patched insn #I ... -> V`` / ``substituting
  insn #I w/ invalid insn``) gives every value and every poisoning;
* the translated program (``BPF_OBJ_GET_INFO_BY_FD``) holds the relocated
  instructions of the live part, byte for byte what pybpf produced.

Poisoned relocations sit behind a branch the verifier knows is never taken.
Cases pybpf refuses (kernel rules) must be refused by the kernel too.
"""

from __future__ import annotations

import re

import pytest
from policy import require_root
from test_core_gen import Case, generate

from pybpf import isa
from pybpf.asm import R0, Asm
from pybpf.btf import BTF
from pybpf.cdecl import EnumValueRef, FieldRef, encode_local_btf
from pybpf.core import POISON_IMM, CoreEngine, CoreRelo, patch_insn
from pybpf.errors import CORERelocationError, PyBPFError
from pybpf.object import ObjectSpec, ProgramSpec, _core_roots, kernel_core_request, prepare
from pybpf.syscall import btf_load, prog_info, prog_load_log
from pybpf.uapi import BPF_PROG_TYPE_RAW_TRACEPOINT

pytestmark = pytest.mark.kernel

LINE = re.compile(
    r"relo #(\d+): (?:patched insn #(\d+) \((ALU/ALU64|LDIMM64|LDX/ST/STX)\) (\w+) (\d+) -> (\d+)"
    r"|substituting insn #(\d+) w/ invalid insn)"
)
U64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def vmlinux() -> BTF:
    require_root()
    return BTF.kernel()


def _program(cases: list[Case], dead: list[Case] = ()) -> ObjectSpec:
    """Live cases, then cases behind ``if r0 == 0`` with r0 = 0 (never verified); loads
    (``ldx``, through r6, which holds no pointer) always go to the dead part."""
    a = Asm()
    dead = [c for c in cases if c.kind == "ldx"] + list(dead)
    for case in cases:
        if case.kind != "ldx":
            case.emit(a)
    a.mov(R0, 0)
    a.jeq(R0, 0, "end")
    for case in dead:
        case.emit(a)
    a.label("end")
    a.exit()
    return ObjectSpec("gen", [ProgramSpec("gen", "raw_tp/sys_enter", a.assemble())])


def _classify(cases: list[Case], btf: BTF) -> tuple[list[Case], list[Case], list[Case]]:
    """(valued, poisoned, refused) by pybpf's engine under the kernel's rules."""
    spec = _program(cases)
    data, ids = encode_local_btf(_core_roots(spec.programs))
    engine = CoreEngine(BTF.from_bytes(data), btf, rules="kernel")
    ok, poisoned, refused = [], [], []
    for case in cases:
        t = case.target
        root = t.root if isinstance(t, (FieldRef, EnumValueRef)) else t
        a = Asm()
        case.emit(a)
        try:
            result = engine.relocate(CoreRelo(0, ids[id(root)], t_access(t), case.kind_number))
            patched = patch_insn(a.insns[0], result, case.label)
        except CORERelocationError:
            refused.append(case)
            continue
        poison = patched[0].imm == POISON_IMM and patched[0].opcode == 0x85
        (poisoned if poison else ok).append(case)
    return ok, poisoned, refused


def t_access(target) -> str:
    return target.access if isinstance(target, (FieldRef, EnumValueRef)) else "0"


def _kernel_load(spec: ObjectSpec, btf: BTF):
    req = kernel_core_request(spec, "gen", btf)
    raw = isa.encode(req.insns)
    with btf_load(req.btf) as btf_fd:
        return prog_load_log(
            BPF_PROG_TYPE_RAW_TRACEPOINT, raw, name="pybpf_gen", prog_btf_fd=btf_fd.fileno(),
            func_info=req.func_info, core_relos=req.core_relos, log_level=2,
        )  # fmt: skip


def test_kernel_relocates_generated_cases_like_pybpf(vmlinux):
    cases = generate(vmlinux)
    ok, poisoned, refused = _classify(cases, vmlinux)
    assert len(ok) + len(poisoned) >= 1000
    assert len(poisoned) >= 50 and len(ok) >= 500
    spec = _program(ok, poisoned)
    prepared = prepare(spec, vmlinux, rules="kernel")
    (prog,) = prepared.programs
    fd, log = _kernel_load(spec, vmlinux)
    with fd:
        info = prog_info(fd.fileno(), xlated=True)
    kernel: dict[int, object] = {}
    mem_sz: dict[int, int] = {}
    for m in LINE.finditer(log):
        n = int(m.group(1))
        if m.group(7) is not None:
            kernel.setdefault(n, set()).add(int(m.group(7)))  # type: ignore[union-attr]
        elif m.group(4) == "mem_sz":
            mem_sz[n] = int(m.group(6))
        else:
            kernel[n] = (int(m.group(2)), int(m.group(6)))
    assert len(prog.relocations) == len(ok) + len(poisoned)
    before = dict(_by_slot(spec.programs[0].insns))
    after = dict(_by_slot(prog.insns))
    mismatches = []
    loads = resized = 0
    for n, (relo, report) in enumerate(zip(prog.core_relos, prog.relocations)):
        wide = before[relo.insn].is_ld_imm64
        if report.target is None:
            want: object = {relo.insn, relo.insn + 1} if wide else {relo.insn}
        else:
            want = (relo.insn, report.target & U64)
            if before[relo.insn].cls == isa.BPF_LDX:
                loads += 1
                old, new = before[relo.insn].mem_size, after[relo.insn].mem_size
                if mem_sz.get(n, old) != new:
                    mismatches.append(f"relo #{n}: kernel loads {mem_sz.get(n, old)}, pybpf {new}")
                resized += old != new
        if kernel.get(n) != want:
            mismatches.append(f"relo #{n} {report.kind} {report.type}.{report.field}: "
                              f"kernel {kernel.get(n)}, pybpf {want}")  # fmt: skip
    assert not mismatches, "\n".join(mismatches[:20])
    assert loads >= 100 and resized >= 5
    # Read-back: the live part of the translated program is pybpf's relocated code.
    live = isa.encode(prog.insns)[: sum(8 * i.slots for i in prog.insns[: _live_count(spec)])]
    assert info.xlated_insns is not None
    assert info.xlated_insns[: len(live)] == live


def _by_slot(insns: list[isa.Instruction]) -> list[tuple[int, isa.Instruction]]:
    out, slot = [], 0
    for insn in insns:
        out.append((slot, insn))
        slot += insn.slots
    return out


def _live_count(spec: ObjectSpec) -> int:
    insns = spec.programs[0].insns
    return next(i for i, insn in enumerate(insns) if insn.cls == isa.BPF_JMP and insn.label)


def test_cases_pybpf_refuses_the_kernel_refuses(vmlinux):
    cases = generate(vmlinux)
    _, _, refused = _classify(cases, vmlinux)
    for case in refused[:8]:
        with pytest.raises(PyBPFError):
            _kernel_load(_program([case]), vmlinux)
