"""pybpf.ringbuf against the kernel's BPF ring buffer (5.8).

Records are produced by real BPF programs (raw_tp, run with BPF_PROG_TEST_RUN on CPU 0), whose
return value is the kernel's own answer to ``bpf_ringbuf_output``: the oracle for what must
come out of the reader (every committed record, in order, byte for byte) and for how many
records the kernel refused when the consumer stalled.
"""

from __future__ import annotations

import os
import select
import struct
import time

import pytest

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, R7, R8, Asm
from pybpf.btf import BTF
from pybpf.errors import PyBPFError
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.uapi import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF

LENGTHS = (5, 13, 24, 61)  # record sizes, not all multiples of 8: the reader must round up
RING = 4096  # one page: wraps after a few dozen records


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root (CI=true: not skipping)")
        pytest.skip("needs root")


def output_prog(length: int) -> list:
    """ctx[0] = seq, ctx[1] = flags: output ``length`` bytes of (seq, seq+8, seq+16, ...)."""
    a = Asm()
    a.mov(R6, R1)
    a.ldx(R7, R6, 0, size=8)
    a.ldx(R8, R6, 8, size=8)
    for k in range(0, 64, 8):
        a.mov(R1, R7).add(R1, k)
        a.stx(FP, -64 + k, R1, size=8)
    a.ld_map_fd(R1, "rb")
    a.mov(R2, FP).add(R2, -64)
    a.mov(R3, length)
    a.mov(R4, R8)
    a.call("ringbuf_output")
    a.exit()
    return a.assemble()


def discard_prog() -> list:
    """Reserve 16 bytes, write a marker, discard: the reader must skip the record."""
    a = Asm()
    a.ld_map_fd(R1, "rb")
    a.mov(R2, 16)
    a.mov(R3, 0)
    a.call("ringbuf_reserve")
    a.jeq(R0, 0, "out")
    a.st(R0, 0, 0x0BAD, size=8)
    a.st(R0, 8, 0x0BAD, size=8)
    a.mov(R1, R0)
    a.mov(R2, 0)
    a.call("ringbuf_discard")
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def open_fds() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the directory listing's own fd
            pass
    return found


def mapped_bpf() -> int:
    with open("/proc/self/maps") as f:
        return sum("bpf-map" in line for line in f)


def expected(seq: int, length: int) -> bytes:
    return struct.pack("<8Q", *(seq + k for k in range(0, 64, 8)))[:length]


@pytest.fixture
def loaded(root: None):
    from pybpf.loader import LoadedObject

    progs = [ProgramSpec(f"out{n}", "raw_tp/sys_enter", output_prog(n)) for n in LENGTHS]
    progs.append(ProgramSpec("discard", "raw_tp/sys_enter", discard_prog()))
    spec = ObjectSpec("rbtest", progs, maps=[MapSpec("rb", BPF_MAP_TYPE_RINGBUF, 0, 0, RING)])
    with LoadedObject(prepare(spec, BTF.kernel())) as obj:
        obj.load()
        yield obj


def run(obj, name: str, seq: int = 0, flags: int = 0) -> int:
    from pybpf import syscall as S

    ctx = struct.pack("<QQ", seq, flags)
    res = S.prog_test_run(obj.programs[name].fileno(), ctx_in=ctx, flags=1, cpu=0)
    return res.retval - (1 << 32) if res.retval >> 31 else res.retval


def test_records_in_order_across_many_wraparounds(loaded) -> None:
    from pybpf.ringbuf import RingBuffer

    got: list[bytes] = []
    want: list[bytes] = []
    with RingBuffer(loaded.maps["rb"].fd, on_sample=got.append) as rb:
        assert rb.size == RING
        seq = 0
        for round_ in range(60):  # 60 rounds x ~7 records x ~40 bytes: ~4 times around
            for i in range(round_ % 7 + 1):
                n = LENGTHS[(round_ + i) % len(LENGTHS)]
                assert run(loaded, f"out{n}", seq) == 0
                want.append(expected(seq, n))
                seq += 1000
            if round_ % 5 == 2:
                assert run(loaded, "discard") == 0
            pending = len(want) - len(got)
            assert rb.consume() == pending
        assert got == want
        assert rb.available == 0


def test_batch_callback_gets_one_list(loaded) -> None:
    from pybpf.ringbuf import RingBuffer

    batches: list[list[bytes]] = []
    with RingBuffer(loaded.maps["rb"].fd, on_batch=batches.append) as rb:
        for seq in range(10):
            run(loaded, "out24", seq)
        assert rb.consume() == 10
    assert [len(b) for b in batches] == [10]
    assert batches[0] == [expected(seq, 24) for seq in range(10)]


def test_full_ring_refuses_and_reader_gets_exactly_the_accepted(loaded) -> None:
    """A stalled consumer: the kernel refuses outputs once the ring is full; what it accepted
    is exactly what the reader then delivers, and space is reusable afterwards."""
    from pybpf.ringbuf import RingBuffer

    got: list[bytes] = []
    with RingBuffer(loaded.maps["rb"].fd, on_sample=got.append) as rb:
        accepted, refused = [], 0
        for seq in range(400):
            if run(loaded, "out24", seq) == 0:
                accepted.append(expected(seq, 24))
            else:
                refused += 1
        # 24-byte records take 32 bytes; the producer may not get a full ring ahead.
        assert len(accepted) == (RING - 1) // 32 and refused == 400 - len(accepted)
        assert rb.consume() == len(accepted)
        assert got == accepted
        assert run(loaded, "out24", 7) == 0
        rb.consume()
        assert got[-1] == expected(7, 24)


def test_no_wakeup_records_are_drained_by_the_timer(loaded) -> None:
    """BPF_RB_NO_WAKEUP: the epoll fd stays quiet, poll() returns the record after its
    timeout; default flags wake the reader at once."""
    from pybpf.ringbuf import BPF_RB_NO_WAKEUP, RingBuffer

    got: list[bytes] = []
    with RingBuffer(loaded.maps["rb"].fd, on_sample=got.append) as rb:
        assert run(loaded, "out13", 1, BPF_RB_NO_WAKEUP) == 0
        assert select.select([rb.fileno()], [], [], 0.05)[0] == []
        t0 = time.monotonic()
        assert rb.poll(150) == 1
        assert time.monotonic() - t0 >= 0.1
        assert got == [expected(1, 13)]
        assert run(loaded, "out13", 2) == 0
        assert select.select([rb.fileno()], [], [], 1.0)[0] == [rb.fileno()]
        t0 = time.monotonic()
        assert rb.poll(5000) == 1
        assert time.monotonic() - t0 < 1.0
        assert got[-1] == expected(2, 13)


def test_close_is_idempotent_and_releases_fds(loaded) -> None:
    from pybpf.ringbuf import RingBuffer

    rb = RingBuffer(loaded.maps["rb"].fd, on_sample=lambda data: None)
    held = {rb._map.fileno(): "anon_inode:bpf-map", rb.fileno(): "anon_inode:[eventpoll]"}
    assert {fd: open_fds().get(str(fd)) for fd in held} == held
    assert mapped_bpf() == 2  # consumer page; producer page + data twice
    rb.close()
    rb.close()
    after = open_fds()
    assert all(after.get(str(fd)) != target for fd, target in held.items())
    assert mapped_bpf() == 0
    with pytest.raises(PyBPFError, match="closed"):
        rb.consume()


def test_needs_a_ringbuf_map(root: None) -> None:
    from pybpf.maps import Map
    from pybpf.ringbuf import RingBuffer

    with Map.create(MapSpec("notrb", BPF_MAP_TYPE_ARRAY, 4, 4, 1)) as m:
        with pytest.raises(PyBPFError, match="BPF_MAP_TYPE_RINGBUF"):
            RingBuffer(m.fd, on_sample=lambda data: None)
        with pytest.raises(PyBPFError, match="exactly one"):
            RingBuffer(m.fd)


@pytest.mark.parametrize("transport", ["ringbuf", "perf"])
def test_runqslower_object_and_reader_leave_no_fd(root: None, transport: str) -> None:
    """Load, attach and read runqslower in this process, close everything: the fd table is
    exactly what it was (no map, program, link, perf event or epoll fd leaked)."""
    import argparse
    import io

    from pybpf.loader import LoadedObject
    from pybpf.runner import load_tool, open_events

    tool = load_tool("runqslower")
    args = argparse.Namespace(min_us=0, transport=transport, attach="tp_btf", previous=False,
                              json=False, pid=None, tid=None, comm=None)  # fmt: skip
    before = open_fds()
    with LoadedObject(prepare(tool.build(args), BTF.kernel()), tool.rodata(args)) as obj:
        obj.load()
        obj.attach()
        out = io.StringIO()
        tool.header(args, out)
        reader = open_events(obj, tool, out, io.StringIO())
        try:
            os.sched_yield()
            reader.poll(100)
        finally:
            reader.close()
    assert out.getvalue().startswith("Tracing run queue latency higher than 0 us")
    assert open_fds() == before
