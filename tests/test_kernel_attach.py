"""Every attach kind on the real kernel: the program counts calls made by this process, and the
count must equal the number of calls we made (the oracle is our own loop).  Kinds the running
kernel lacks (e.g. without CONFIG_KPROBES, or without ftrace for fentry/fexit) must fail with
one clear error instead.
"""

from __future__ import annotations

import ctypes
import os

import pytest

from pybpf import probes
from pybpf.asm import FP, R0, R1, R2, R6, Asm
from pybpf.btf import BTF
from pybpf.errors import PyBPFError
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.uapi import BPF_MAP_TYPE_PERCPU_ARRAY

pytestmark = pytest.mark.kernel


# getppid's syscall number (tests may know the ABI of the machine they run on).
NR_GETPPID = {"x86_64": 110, "aarch64": 173}.get(os.uname().machine)
CALLS = 100


def counter(syscall_nr: int = -1) -> list:
    """Count calls from this process (tgid); with ``syscall_nr``, only that syscall
    (ctx[1] of sys_enter is the syscall id)."""
    a = Asm()
    a.mov(R6, R1)
    a.call("get_current_pid_tgid")
    a.rsh(R0, 32)
    a.jne(R0, os.getpid(), "out")
    if syscall_nr >= 0:
        a.ldx(R1, R6, 8, size=8)
        a.jne(R1, syscall_nr, "out")
    a.st(FP, -4, 0, size=4)
    a.ld_map_fd(R1, "counts")
    a.mov(R2, FP).add(R2, -4)
    a.call("map_lookup_elem")
    a.jeq(R0, 0, "out")
    a.ldx(R1, R0, 0, size=8)
    a.add(R1, 1)
    a.stx(R0, 0, R1, size=8)
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def run_counted(section: str, insns: list, trigger) -> int:
    """Load and attach one program, run ``trigger``, detach; return the count."""
    from pybpf.loader import LoadedObject

    spec = ObjectSpec(
        "attach", [ProgramSpec("count", section, insns)],
        maps=[MapSpec("counts", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1)],
    )  # fmt: skip
    with LoadedObject(prepare(spec, BTF.kernel())) as obj:
        obj.load()
        obj.attach()
        trigger()
        raw = obj.maps["counts"].lookup(b"\0\0\0\0")
    return sum(int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8))


def getppids() -> None:
    for _ in range(CALLS):
        os.getppid()


def reads() -> None:
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        for _ in range(CALLS):
            os.read(fd, 1)
    finally:
        os.close(fd)


@pytest.fixture
def tracefs():
    """tracefs (tracepoint ids); mounted for the test if the system has not."""
    path = "/sys/kernel/tracing"
    if os.path.isdir(f"{path}/events") or os.path.isdir("/sys/kernel/debug/tracing/events"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mount(b"nodev", path.encode(), b"tracefs", 0, None) == 0, os.strerror(
        ctypes.get_errno()
    )
    try:
        yield
    finally:
        libc.umount2(path.encode(), 0)


@pytest.mark.skipif(NR_GETPPID is None, reason="syscall number table: x86_64, aarch64")
@pytest.mark.parametrize("section", ["tp_btf/sys_enter", "raw_tp/sys_enter"])
def test_sys_enter_counts_every_call(section: str) -> None:
    """tp_btf (5.5) and raw_tp (4.17) on the sys_enter tracepoint: exactly our calls."""
    assert run_counted(section, counter(NR_GETPPID), getppids) == CALLS


def test_perf_tracepoint_counts_every_call(tracefs: None) -> None:
    """tracepoint/syscalls/sys_enter_getppid (4.7): a perf event plus a BPF_PERF_EVENT link."""
    assert run_counted("tracepoint/syscalls/sys_enter_getppid", counter(), getppids) == CALLS


def test_unknown_tracepoint_is_one_clear_error(tracefs: None) -> None:
    with pytest.raises(PyBPFError, match="no such tracepoint"):
        run_counted("tracepoint/nosuch/event", counter(), getppids)
    with pytest.raises(PyBPFError, match="CATEGORY/NAME"):
        run_counted("tracepoint/sched_switch", counter(), getppids)


@pytest.mark.parametrize("kind", ["kprobe", "kretprobe"])
def test_kprobes_count_or_say_why_not(kind: str) -> None:
    """kprobe/kretprobe (kprobe PMU, 4.17) on ksys_read: at least our reads (others of this
    process may add), or, on a kernel without kprobes, one clear error."""
    section = f"{kind}/ksys_read"
    if os.path.exists("/sys/bus/event_source/devices/kprobe/type"):
        assert CALLS <= run_counted(section, counter(), reads) <= CALLS + 10
    else:
        with pytest.raises(PyBPFError, match="no kprobe PMU .*CONFIG_KPROBES"):
            run_counted(section, counter(), reads)


@pytest.mark.parametrize("kind", ["fentry", "fexit"])
def test_fentry_fexit_count_or_say_why_not(kind: str) -> None:
    """fentry/fexit (5.5, BPF trampolines need ftrace) on ksys_read."""
    section = f"{kind}/ksys_read"
    if probes.have_fentry():
        assert CALLS <= run_counted(section, counter(), reads) <= CALLS + 10
    else:
        with pytest.raises(PyBPFError, match=f"{kind}/ksys_read.*refuses BPF trampolines"):
            run_counted(section, counter(), reads)


def test_unknown_function_and_section() -> None:
    with pytest.raises(PyBPFError, match="no function 'no_such_fn'"):
        prepare(ObjectSpec("x", [ProgramSpec("p", "fentry/no_such_fn", counter())],
                           maps=[MapSpec("counts", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1)]),
                BTF.kernel())  # fmt: skip
    with pytest.raises(PyBPFError, match="supported are tp_btf/"):
        prepare(ObjectSpec("x", [ProgramSpec("p", "uprobe/x", counter())]), BTF.kernel())
