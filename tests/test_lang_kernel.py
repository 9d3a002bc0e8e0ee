"""tp_btf programs in the language: arguments from btf_trace_*, kernel fields by name (CO-RE).

A sched_switch program reports the switches *to* a child process of the test;
the pids, the parent's tgid (``next.real_parent.tgid``, a pointer chase) and the
task name must be what /proc says about that child.  ``field_exists`` must agree
with the kernel's BTF about an old-kernel flavor and a current field.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pybpf.lang import (
    KernelStruct,
    PerfEventArray,
    ReadOnly,
    RingBuf,
    Struct,
    bpf,
    build,
    cast,
    char,
    field_exists,
    program,
    s32,
    s64,
    sizeof,
    u64,
)

pytestmark = pytest.mark.kernel


class Switch(Struct):
    prev_pid: s32
    next_pid: s32
    next_tgid: s32
    parent_tgid: s32
    comm: char[16]
    has_state: s32
    has_new_state: s32
    vruntime: u64
    prev_tgid: s32
    current: char[16]
    prev_comm: char[16]


class task_struct___o(KernelStruct):  # noqa: N801 - a libbpf flavor: Linux < 5.14's layout
    state: s64


switches = RingBuf(1 << 16)
copies = PerfEventArray()


class target(ReadOnly):  # noqa: N801
    tgid: s32


@program("tp_btf/sched_switch")
def on_switch(preempt, prev, next) -> s32:
    if next.tgid != target.tgid:
        return 0
    ev = Switch()
    ev.prev_pid = prev.pid
    ev.next_pid = next.pid
    ev.next_tgid = next.tgid
    ev.parent_tgid = next.real_parent.tgid
    ev.comm = next.comm
    ev.has_state = field_exists(task_struct___o.state)
    ev.has_new_state = field_exists(next.__state)
    ev.vruntime = next.se.vruntime
    ev.prev_tgid = cast(prev, "task_struct").tgid
    bpf.get_current_comm(ev.current, sizeof(ev.current))
    ev.prev_comm = prev.comm
    switches.output(ev)
    same = ev
    copies.output(same)
    return 0


CHILD = "import time\nfor _ in range(200):\n    time.sleep(0.001)\n"


@pytest.fixture(params=["tp_btf", "raw_tp"])
def section(request):
    """tp_btf loads fields directly; raw_tp reads them with bpf_probe_read_kernel."""
    on_switch._bpf_program = (f"{request.param}/sched_switch", "GPL")
    yield request.param
    on_switch._bpf_program = ("tp_btf/sched_switch", "GPL")


def test_sched_switch_fields_match_proc(need_root, section):
    from pybpf.btf import BTF
    from pybpf.loader import LoadedObject
    from pybpf.object import prepare
    from pybpf.perf import PerfBuffer
    from pybpf.ringbuf import RingBuffer

    btf = BTF.kernel()
    compiled = build("switch", [on_switch], btf)
    helpers = [i.helper for i in compiled.spec.programs[0].insns if i.helper]
    # raw_tp: each of the 8 field reads (pids, tgids, the parent pointer, vruntime) is a
    # probe read; tp_btf loads them directly
    assert helpers.count("probe_read_kernel") == (8 if section == "raw_tp" else 0)
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        with open(f"/proc/{child.pid}/comm") as f:
            comm = f.read().strip()
        with LoadedObject(prepare(compiled.spec, btf), {"tgid": child.pid}) as obj:
            obj.load()
            obj.attach()
            got: list[Switch] = []
            perf: list[Switch] = []
            with RingBuffer(obj.maps["switches"].fd,
                            on_sample=lambda d: got.append(Switch.decode(d))) as rb, \
                    PerfBuffer(obj.maps["copies"].fd, page_count=8, on_batch=lambda cpu, rs:
                               perf.extend(Switch.decode(r) for r in rs)) as pb:  # fmt: skip
                deadline = time.monotonic() + 10
                while len(got) < 20 and time.monotonic() < deadline:
                    rb.poll(50)
                pb.poll(100)
                pb.consume()
                rb.consume()  # each perf copy was output after its ring buffer original
    finally:
        child.wait(timeout=30)
    assert len(got) >= 20
    for ev in got:
        assert (ev.next_pid, ev.next_tgid) == (child.pid, child.pid)
        assert ev.parent_tgid == __import__("os").getpid()
        assert ev.comm == comm
        assert ev.prev_pid != child.pid
        assert (ev.has_state, ev.has_new_state) == (0, 1)  # Linux 5.14 renamed state
        assert ev.vruntime > 0 and ev.prev_tgid > 0 or ev.prev_pid == 0
        assert ev.current == ev.prev_comm  # sched_switch runs on behalf of prev
    # the perf buffer got copies of the same events (those emitted by now)
    assert perf and all(p in got for p in perf)


def test_bpftool_shows_the_python_lines(need_root):
    """The program BTF's line_info carries the Python source: bpftool (our oracle, not
    our code) prints it between the translated instructions."""
    import re
    import shutil

    from pybpf.btf import BTF
    from pybpf.loader import LoadedObject
    from pybpf.object import prepare
    from pybpf.syscall import prog_info

    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is a test oracle here")
    btf = BTF.kernel()
    compiled = build("switch", [on_switch], btf)
    with LoadedObject(prepare(compiled.spec, btf), {"tgid": 1}) as obj:
        obj.load()
        prog_id = prog_info(obj.programs["on_switch"].fileno()).id
        out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "; ev.parent_tgid = next.real_parent.tgid" in out
    assert "; if next.tgid != target.tgid:" in out
    lines = re.findall(r"^; (.*) \[file:\S*test_lang_kernel.py line_num:(\d+)", out, re.M)
    source = open(__file__).read().splitlines()
    assert len(lines) > 10
    assert all(source[int(n) - 1].strip() == text for text, n in lines)


def test_relocations_are_recorded_against_local_structs():
    """Without running anything: every kernel field is a CO-RE relocation whose local
    struct holds only the members used (as a ___x flavor written by hand would)."""
    pytest.importorskip("pybpf.btf")
    import os

    from pybpf.asm import CoreAccess

    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    from pybpf.btf import BTF

    compiled = build("switch", [on_switch], BTF.kernel())
    cores = [i.core for i in compiled.spec.programs[0].insns if isinstance(i.core, CoreAccess)]
    fields = {f"{c.root.name}.{c.field}" for c in cores}
    assert {"task_struct.pid", "task_struct.tgid", "task_struct.real_parent",
            "task_struct.comm", "task_struct___o.state", "task_struct.__state"} <= fields
    (task,) = {c.root for c in cores if c.root.name == "task_struct"}
    assert [m[0] for m in task.members] == ["tgid", "pid", "real_parent", "comm", "__state", "se"]
