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
import threading
import time

import pytest
from policy import require_root

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, Asm
from pybpf.btf import BTF
from pybpf.errors import PyBPFError
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.uapi import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF

pytestmark = pytest.mark.kernel

LENGTHS = (5, 13, 24, 61)  # record sizes, not all multiples of 8: the reader must round up
RING = 4096  # one page: wraps after a few dozen records


@pytest.fixture
def root() -> None:
    require_root()


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


BIG = 64 * 4096  # 16 windows of one page: records cross window and page boundaries


@pytest.fixture
def loaded_big(root: None):
    from pybpf.loader import LoadedObject

    progs = [ProgramSpec(f"out{n}", "raw_tp/sys_enter", output_prog(n)) for n in LENGTHS]
    spec = ObjectSpec("rbbig", progs, maps=[MapSpec("rb", BPF_MAP_TYPE_RINGBUF, 0, 0, BIG)])
    with LoadedObject(prepare(spec, BTF.kernel())) as obj:
        obj.load()
        yield obj


@pytest.mark.parametrize("batch", [1, 300, 3000])
def test_window_slides_over_a_big_ring(loaded_big, batch: int) -> None:
    """A ring of 64 pages read through a window of two one-page chunks: every record comes
    out in order, byte for byte, whether the reader keeps up (batch 1), lags by a few
    windows (300 records) or by most of the ring (3000 records), across three wraps."""
    from pybpf.ringbuf import RingBuffer

    got: list[bytes] = []
    want: list[bytes] = []
    with RingBuffer(loaded_big.maps["rb"].fd, on_sample=got.append, window_chunk=4096) as rb:
        assert rb.size == BIG
        seq = 0
        while len(want) < 24000:  # ~40 bytes each: ~3.5 times around the ring
            for i in range(batch):
                n = LENGTHS[(seq // 1000 + i) % len(LENGTHS)]
                assert run(loaded_big, f"out{n}", seq) == 0
                want.append(expected(seq, n))
                seq += 1000
            assert rb.consume() == batch
            assert rb._win_end - rb._win_start == 2 * 4096  # never more than two chunks mapped
        assert got == want
        assert rb.available == 0


def test_a_reader_far_behind_drains_in_bounded_batches(loaded_big, monkeypatch) -> None:
    """3000 records (~120 KiB) behind, with batches capped at 4 KiB of ring space: one
    consume() hands them all over, in order, in batches none of which exceeds the cap by more
    than one record, and the consumer position ends at the producer's."""
    from pybpf import ringbuf

    monkeypatch.setattr(ringbuf, "BATCH_BYTES", 4096)
    batches: list[list[bytes]] = []
    want: list[bytes] = []
    with ringbuf.RingBuffer(loaded_big.maps["rb"].fd, on_batch=batches.append) as rb:
        for seq in range(0, 3000 * 1000, 1000):
            n = LENGTHS[seq // 1000 % len(LENGTHS)]
            assert run(loaded_big, f"out{n}", seq) == 0
            want.append(expected(seq, n))
        assert rb.consume() == 3000
        assert [r for b in batches for r in b] == want
        assert len(batches) > 20
        assert all(sum((len(r) + 15) & ~7 for r in b) < 4096 + 72 for b in batches)
        assert rb.available == 0


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_16_mib_ring_does_not_cost_16_mib_of_rss(root: None) -> None:
    """The kernel maps every page of a ring-buffer mapping at mmap time (each counts in RSS):
    the reader's windowed mapping keeps a 16 MiB ring's reader under 1 MiB of RSS, where
    mapping the data area once would add 16 MiB (/proc/self/status VmRSS is the oracle)."""
    from pybpf import probes
    from pybpf.maps import Map
    from pybpf.ringbuf import RingBuffer
    from pybpf.syscall import bump_memlock_rlimit

    if not probes.have_memcg_accounting():  # before 5.11: 16 MiB against RLIMIT_MEMLOCK
        bump_memlock_rlimit()
    with Map.create(MapSpec("rb16", BPF_MAP_TYPE_RINGBUF, 0, 0, 16 << 20)) as m:
        before = vm_rss_kib()
        with RingBuffer(m.fd, on_sample=lambda data: None) as rb:
            grown = vm_rss_kib() - before
            assert rb.size == 16 << 20
        assert grown < 1024, f"reader of a 16 MiB ring added {grown} KiB of RSS"
        import mmap

        whole = mmap.mmap(m.fd, 16 << 20, mmap.MAP_SHARED, mmap.PROT_READ,
                          offset=2 * mmap.PAGESIZE)
        try:  # the oracle's premise: where the kernel counts ring pages in RSS (6.x: all of
            # them at mmap time), mapping it whole costs them all; 5.10 counts none, even
            # when every page is read: all or nothing, never the reader's share
            sum(whole[i] for i in range(0, len(whole), mmap.PAGESIZE))
            whole_cost = vm_rss_kib() - before
            assert whole_cost > 15 * 1024 or whole_cost < 1024, whole_cost
        finally:
            whole.close()


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


BUSY_A, BUSY_B = 20, 44  # not multiples of 8: the records take 32 and 56 bytes
GATE_TIMEOUT_NS = 5_000_000_000  # the busy program gives up (and says so) after 5 s


def fill(a: Asm, rec, seq, length: int) -> None:
    """Write expected(seq, length) into ``rec``: u64 seq+k at k, a u32 tail if length % 8."""
    for k in range(0, length, 8):
        a.mov(R1, seq).add(R1, k)
        a.stx(rec, k, R1, size=min(8, length - k))


def busy_prog() -> list:
    """ctx[0] = seq of A, ctx[1] = seq of B.  Reserve A, reserve B, fill and submit B, then
    spin (bpf_loop in bpf_loop, 5.17) until user space writes non-zero into ``gate`` or 5 s
    pass; only then fill and submit A.  Returns 1 when released, 2 on timeout, 10x when a
    reservation failed."""
    a = Asm()
    a.ldx(R8, R1, 0, size=8)
    a.ldx(R9, R1, 8, size=8)
    a.ld_map_fd(R1, "rb").mov(R2, BUSY_A).mov(R3, 0).call("ringbuf_reserve")
    a.jeq(R0, 0, "no_a")
    a.mov(R7, R0)
    a.ld_map_fd(R1, "rb").mov(R2, BUSY_B).mov(R3, 0).call("ringbuf_reserve")
    a.jeq(R0, 0, "no_b")
    a.mov(R6, R0)
    fill(a, R6, R9, BUSY_B)
    a.mov(R1, R6).mov(R2, 0).call("ringbuf_submit")
    # struct { u64 outcome; u64 deadline; } at fp-16, shared with the callbacks.
    a.call("ktime_get_ns")
    a.ld_imm64(R1, GATE_TIMEOUT_NS).add(R0, R1)
    a.stx(FP, -8, R0, size=8)
    a.st(FP, -16, 0, size=8)
    a.mov(R1, 1 << 20).ld_func(R2, "outer").mov(R3, FP).add(R3, -16).mov(R4, 0)
    a.call("loop")
    fill(a, R7, R8, BUSY_A)  # A's bytes are written only now: a reader must not copy early
    a.mov(R1, R7).mov(R2, 0).call("ringbuf_submit")
    a.ldx(R0, FP, -16, size=8)
    a.exit()
    a.label("no_b")
    a.mov(R1, R7).mov(R2, 0).call("ringbuf_discard")
    a.mov(R0, 102).exit()
    a.label("no_a")
    a.mov(R0, 101).exit()
    # long outer(u64 i, ctx *c): bpf_loop(1 << 20, inner, c); stop once c->outcome is set.
    a.subprog("outer")
    a.mov(R6, R2)
    a.mov(R1, 1 << 20).ld_func(R2, "inner").mov(R3, R6).mov(R4, 0)
    a.call("loop")
    a.ldx(R1, R6, 0, size=8)
    a.mov(R0, 0)
    a.jeq(R1, 0, "outer_more")
    a.mov(R0, 1)
    a.label("outer_more")
    a.exit()
    # long inner(u64 i, ctx *c): c->outcome = 1 when the gate is open, 2 past the deadline.
    a.subprog("inner")
    a.mov(R6, R2)
    a.ld_map_value(R1, "gate", 0)
    a.ldx(R1, R1, 0, size=8)
    a.jne(R1, 0, "released")
    a.call("ktime_get_ns")
    a.ldx(R1, R6, 8, size=8)
    a.jgt(R0, R1, "timed_out")
    a.mov(R0, 0).exit()
    a.label("released")
    a.st(R6, 0, 1, size=8)
    a.mov(R0, 1).exit()
    a.label("timed_out")
    a.st(R6, 0, 2, size=8)
    a.mov(R0, 1).exit()
    return a.assemble()


@pytest.fixture
def busy(root: None):
    from pybpf.loader import LoadedObject

    progs = [
        ProgramSpec("out24", "raw_tp/sys_enter", output_prog(24)),
        ProgramSpec("busy", "raw_tp/sys_enter", busy_prog()),
    ]
    maps = [
        MapSpec("rb", BPF_MAP_TYPE_RINGBUF, 0, 0, RING),
        MapSpec("gate", BPF_MAP_TYPE_ARRAY, 4, 8, 1),
    ]
    spec = ObjectSpec("rbbusy", progs, maps=maps)
    try:
        prepared = prepare(spec, BTF.kernel())
    except PyBPFError as err:  # bpf_loop is 5.17: an older kernel's enum bpf_func_id lacks it
        assert str(err) == "helper bpf_loop() does not exist on this kernel", err
        pytest.skip(f"the busy program spins with bpf_loop (5.17): {err}")
    with LoadedObject(prepared) as obj:
        obj.load()
        yield obj


def test_busy_record_holds_back_later_records(busy) -> None:
    """A record reserved but not committed (BPF_RINGBUF_BUSY_BIT) stops the reader: the
    records before it come out, the one committed after it does not, and the consumer
    position stays at the busy record until the program commits it; then A and B come out
    in order, byte for byte.  The program spins on one CPU (preemption off) while this
    thread reads the ring from another."""
    from pybpf import syscall as S
    from pybpf.ringbuf import BPF_RINGBUF_BUSY_BIT, RingBuffer

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: the busy program spins with preemption disabled")
    prod_cpu, cons_cpu = cpus[0], cpus[1]
    want_a, want_b = expected(0xA000, BUSY_A), expected(0xB000, BUSY_B)
    got: list[bytes] = []
    result: dict = {}

    def producer() -> None:
        try:
            os.sched_setaffinity(0, {prod_cpu})  # this thread only: run the program here
            ctx = struct.pack("<QQ", 0xA000, 0xB000)
            fd = busy.programs["busy"].fileno()
            result["ret"] = S.prog_test_run(fd, ctx_in=ctx, flags=1, cpu=prod_cpu).retval
        except BaseException as exc:  # reported by the main thread
            result["exc"] = exc

    def gate(value: int) -> None:
        busy.maps["gate"].update(struct.pack("<I", 0), struct.pack("<Q", value))

    def header(pos: int) -> int:
        # the reader's data window (a one-page ring: the whole doubled data area)
        return struct.unpack_from("=I", rb._win, (pos & (RING - 1)) - rb._win_start)[0]

    def cons_pos() -> int:
        return struct.unpack_from("=Q", rb._cons, 0)[0]

    def prod_pos() -> int:
        return struct.unpack_from("=Q", rb._prod, 0)[0]

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cons_cpu})
    thread = threading.Thread(target=producer, daemon=True)
    with RingBuffer(busy.maps["rb"].fd, on_sample=got.append) as rb:
        try:
            for seq in (1, 2):  # committed before A: these must come out while A is busy
                assert run(busy, "out24", seq) == 0
            pos_a = 2 * 32
            pos_b = pos_a + 32
            gate(0)
            thread.start()
            deadline = time.monotonic() + 4.0
            # Wait until the program has reserved A and B and committed B.
            while not (prod_pos() == pos_b + 56 and header(pos_b) == BUSY_B):
                assert thread.is_alive() and time.monotonic() < deadline, (result, prod_pos())
                time.sleep(0.001)
            assert header(pos_a) == BUSY_A | BPF_RINGBUF_BUSY_BIT  # A: reserved, not committed
            assert rb.consume() == 2
            assert got == [expected(1, 24), expected(2, 24)]
            assert cons_pos() == pos_a  # stopped exactly at the busy record
            assert rb.available == 32 + 56
            # B stays held back for as long as A is busy (epoll reports data at once:
            # the kernel counts reserved bytes as available).
            held_until = time.monotonic() + 0.2
            while time.monotonic() < held_until:
                assert rb.poll(10) == 0
                time.sleep(0.01)
                assert rb.consume() == 0
                assert len(got) == 2 and cons_pos() == pos_a
                assert header(pos_a) & BPF_RINGBUF_BUSY_BIT
            assert thread.is_alive() and not result  # all of this while the program spun
        finally:
            gate(1)
            if thread.ident is not None:
                thread.join(10)
            os.sched_setaffinity(0, affinity)
        assert not thread.is_alive()
        assert "exc" not in result, result
        assert result["ret"] == 1  # released by the gate, not by its 5-s timeout
        assert header(pos_a) == BUSY_A and header(pos_b) == BUSY_B
        assert rb.consume() == 2
        assert got[2:] == [want_a, want_b]
        assert cons_pos() == prod_pos() == pos_b + 56
        assert rb.available == 0


def test_close_is_idempotent_and_releases_fds(loaded) -> None:
    from pybpf.ringbuf import RingBuffer

    rb = RingBuffer(loaded.maps["rb"].fd, on_sample=lambda data: None)
    held = {rb._map.fileno(): "anon_inode:bpf-map", rb.fileno(): "anon_inode:[eventpoll]"}
    assert {fd: open_fds().get(str(fd)) for fd in held} == held
    assert mapped_bpf() == 3  # consumer page; producer page; data window
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
    btf = BTF.kernel()  # before the count: a cached BTF keeps its file mapped (one fd)
    before = open_fds()
    with LoadedObject(prepare(tool.build(args), btf), tool.rodata(args)) as obj:
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
