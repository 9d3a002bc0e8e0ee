"""pybpf.syscall, pybpf.maps and pybpf.perf against the running kernel, bpftool as oracle.

Tests that need root (or bpftool) skip without it, except under CI=true where they fail:
a CI run must not go green by skipping everything.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import time

import pytest
from policy import require_tools

from pybpf import maps as M
from pybpf import perf as P
from pybpf import syscall as S
from pybpf import uapi as U
from pybpf.errors import BPFSyscallError, PyBPFError, VerifierError

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]

@pytest.fixture
def root() -> None:
    """(Checked for every test by the kernel marker.)"""


@pytest.fixture
def bpftool(root: None) -> str:
    return require_tools("bpftool")


def run_bpftool(bpftool: str, *args: str) -> object:
    out = subprocess.run([bpftool, *args, "-j"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def hexbytes(values: list[str]) -> bytes:
    return bytes(int(v, 16) for v in values)


# ---------------------------------------------------------------------------------------------
# hand-encoded instructions (struct bpf_insn: u8 code, u8 dst:4 src:4, s16 off, s32 imm)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhI", code, (src << 4) | dst, off, imm & 0xFFFFFFFF)


def ld_imm64(dst: int, imm: int, src: int = 0) -> bytes:
    return insn(0x18, dst, src, 0, imm & 0xFFFFFFFF) + insn(0, 0, 0, 0, (imm >> 32) & 0xFFFFFFFF)


RET0 = bytes.fromhex("b700000000000000 9500000000000000")  # r0 = 0; exit
EXIT_ONLY = bytes.fromhex("9500000000000000")  # exit with r0 unset: rejected


def ret_imm(value: int) -> bytes:
    return insn(0xB7, 0, imm=value) + insn(0x95)  # r0 = value; exit


def perf_output_prog(map_fd: int) -> bytes:
    """Socket filter: bpf_perf_event_output(skb, map, BPF_F_CURRENT_CPU | len << 32, &len, 8).

    The sample is skb->len as a u64 followed by the skb's bytes (the upper 32 bits of the
    flags ask bpf_skb_event_output to append that many packet bytes), so record sizes vary
    with the packet and rings wrap at many different offsets.
    """
    return b"".join(
        [
            insn(0xBF, 6, 1),  # r6 = r1 (ctx)
            insn(0x61, 2, 1, 0),  # r2 = *(u32 *)(r1 + 0)  (__sk_buff.len)
            insn(0xBF, 7, 2),  # r7 = r2
            insn(0x7B, 10, 7, -8),  # *(u64 *)(r10 - 8) = r7
            insn(0x67, 2, imm=32),  # r2 <<= 32
            ld_imm64(3, 0xFFFFFFFF),  # r3 = BPF_F_CURRENT_CPU
            insn(0x4F, 3, 2),  # r3 |= r2
            insn(0xBF, 4, 10),  # r4 = r10
            insn(0x07, 4, imm=-8),  # r4 += -8
            insn(0xB7, 5, imm=8),  # r5 = 8
            insn(0xBF, 1, 6),  # r1 = r6
            ld_imm64(2, map_fd, src=1),  # r2 = map (BPF_PSEUDO_MAP_FD)
            insn(0x85, imm=25),  # call bpf_perf_event_output
            insn(0xB7, 0, imm=0),  # r0 = 0
            insn(0x95),  # exit
        ]
    )


def socket_filter(insns: bytes = RET0, name: str = "") -> S.FD:
    return S.prog_load(U.BPF_PROG_TYPE_SOCKET_FILTER, insns, name=name)


# ---------------------------------------------------------------------------------------------
# pure helpers


def test_parse_cpu_list() -> None:
    assert S.parse_cpu_list("0-1,3\n") == [0, 1, 3]
    assert S.parse_cpu_list("0") == [0]
    assert S.parse_cpu_list("0-3,8-9") == [0, 1, 2, 3, 8, 9]


def test_attr_size_covers_last_nonzero_field() -> None:
    assert S.attr_size(S.GetIdAttr()) == 4  # all zero: first field
    assert S.attr_size(S.MapCreateAttr(map_type=1, max_entries=4)) == 16
    # one byte into map_name covers the whole name field
    assert S.attr_size(S.MapCreateAttr(map_name=b"a")) == 44
    assert S.attr_size(S.MapCreateAttr(map_extra=1)) == 72
    token_end = S.MapCreateAttr.map_token_fd.offset + 4
    assert S.attr_size(S.MapCreateAttr(map_token_fd=3)) == token_end
    # output fields are covered on request
    assert S.attr_size(S.ProgLoadAttr(prog_type=1), min_size=144) == 144
    # (the layouts themselves are checked against bpftool in test_abi.py)


def test_error_message_names_command_and_errno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S.os, "geteuid", lambda: 1000)
    msg = S.error_message("BPF_PROG_LOAD", errno.EPERM)
    assert msg.startswith("BPF_PROG_LOAD: Operation not permitted (EPERM)")
    assert "CAP_BPF" in msg
    if S.unprivileged_bpf_disabled() > 0:
        assert "kernel.unprivileged_bpf_disabled" in msg
    monkeypatch.setattr(S.os, "geteuid", lambda: 0)
    msg = S.error_message("BPF_PROG_LOAD", errno.EPERM)
    assert "already root" in msg and "CAP_BPF" not in msg
    unsupported = S.error_message("BPF_PROG_LOAD", 524)
    assert unsupported.endswith("(ENOTSUPP); this kernel does not support it")
    assert S.error_message("BPF_MAP_CREATE", errno.EINVAL) == (
        "BPF_MAP_CREATE: Invalid argument (EINVAL)"
    )


def test_bump_memlock_rlimit_never_raises() -> None:
    result = S.bump_memlock_rlimit()
    assert result is None or "RLIMIT_MEMLOCK" in result


def test_fd_ownership() -> None:
    r, w = os.pipe()
    os.close(w)
    fd = S.FD(r)
    assert int(fd) == fd.fileno() == r
    with fd:
        pass
    assert fd.closed
    fd.close()  # idempotent
    with pytest.raises(OSError):
        os.fstat(r)
    with pytest.raises(PyBPFError):
        fd.fileno()


def test_perf_buffer_rejects_bad_page_count() -> None:
    with pytest.raises(PyBPFError, match="power of two"):
        P.PerfBuffer(0, 3, on_sample=lambda cpu, data: None)


# ---------------------------------------------------------------------------------------------
# maps


def test_hash_map_against_bpftool(bpftool: str) -> None:
    spec = M.MapSpec("pybpf_hash", U.BPF_MAP_TYPE_HASH, 4, 8, 64)
    with M.Map.create(spec) as m:
        expected = {struct.pack("<I", k): struct.pack("<Q", k * 1000 + 7) for k in range(1, 11)}
        for k, v in expected.items():
            m.update(k, v)
        assert m.lookup(struct.pack("<I", 3)) == struct.pack("<Q", 3007)
        assert m.lookup(struct.pack("<I", 99)) is None
        assert m.delete(struct.pack("<I", 10)) is True
        assert m.delete(struct.pack("<I", 10)) is False
        del expected[struct.pack("<I", 10)]
        assert dict(m.items()) == expected
        assert sorted(m.keys()) == sorted(expected)

        dump = run_bpftool(bpftool, "map", "dump", "id", str(m.info().id))
        assert {hexbytes(e["key"]): hexbytes(e["value"]) for e in dump} == expected


def test_array_map_against_bpftool(bpftool: str) -> None:
    spec = M.MapSpec("pybpf_array", U.BPF_MAP_TYPE_ARRAY, 4, 16, 4)
    with M.Map.create(spec) as m:
        m.update(struct.pack("<I", 2), b"x" * 16)
        items = dict(m.items())
        assert len(items) == 4  # arrays always hold max_entries elements
        assert items[struct.pack("<I", 2)] == b"x" * 16
        assert items[struct.pack("<I", 0)] == bytes(16)
        with pytest.raises(BPFSyscallError) as exc:
            m.update(struct.pack("<I", 4), bytes(16))  # out of range
        assert exc.value.errno == errno.E2BIG
        with pytest.raises(BPFSyscallError) as exc:
            m.delete(struct.pack("<I", 0))  # array elements cannot be deleted
        assert exc.value.errno == errno.EINVAL

        dump = run_bpftool(bpftool, "map", "dump", "id", str(m.info().id))
        assert {hexbytes(e["key"]): hexbytes(e["value"]) for e in dump} == items


def test_map_update_flags(root: None) -> None:
    with M.Map.create(M.MapSpec("flags", U.BPF_MAP_TYPE_HASH, 4, 4, 8)) as m:
        k = struct.pack("<I", 1)
        with pytest.raises(BPFSyscallError) as exc:
            m.update(k, b"aaaa", U.BPF_EXIST)
        assert exc.value.errno == errno.ENOENT
        assert "BPF_MAP_UPDATE_ELEM" in str(exc.value)
        m.update(k, b"aaaa", U.BPF_NOEXIST)
        with pytest.raises(BPFSyscallError) as exc:
            m.update(k, b"bbbb", U.BPF_NOEXIST)
        assert exc.value.errno == errno.EEXIST
        m.update(k, b"cccc", U.BPF_EXIST)
        assert m.lookup(k) == b"cccc"
        with pytest.raises(PyBPFError, match="key must be 4 bytes"):
            m.lookup(b"\0")


def test_percpu_array_values_per_possible_cpu(root: None) -> None:
    ncpu = len(S.possible_cpus())
    with M.Map.create(M.MapSpec("percpu", U.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 1)) as m:
        assert m.value_buf_size == 8 * ncpu
        value = b"".join(struct.pack("<Q", c + 1) for c in range(ncpu))
        m.update(struct.pack("<I", 0), value)
        assert m.lookup(struct.pack("<I", 0)) == value


def test_map_freeze(bpftool: str) -> None:
    with M.Map.create(M.MapSpec("frozen", U.BPF_MAP_TYPE_ARRAY, 4, 4, 1)) as m:
        k = struct.pack("<I", 0)
        m.update(k, b"abcd")
        m.freeze()
        with pytest.raises(BPFSyscallError) as exc:
            m.update(k, b"efgh")
        assert exc.value.errno == errno.EPERM
        assert str(exc.value).startswith("BPF_MAP_UPDATE_ELEM: Operation not permitted (EPERM)")
        assert m.lookup(k) == b"abcd"
        show = run_bpftool(bpftool, "map", "show", "id", str(m.info().id))
        assert show["frozen"] == 1


def test_map_name_and_info(bpftool: str) -> None:
    spec = M.MapSpec("a_rather_long_map_name", U.BPF_MAP_TYPE_HASH, 8, 4, 32, U.BPF_F_NO_PREALLOC)
    with M.Map.create(spec) as m:
        info = m.info()
        assert info.name == "a_rather_long_m"  # 15 characters
        show = run_bpftool(bpftool, "map", "show", "id", str(info.id))
        assert show["name"] == info.name
        assert show["type"] == "hash"
        assert (show["bytes_key"], show["bytes_value"], show["max_entries"]) == (8, 4, 32)
        assert show["flags"] == info.map_flags == U.BPF_F_NO_PREALLOC
        assert info.id in set(S.iter_map_ids())
        with M.Map.from_id(info.id) as again:
            assert again.spec.key_size == 8
            m.update(bytes(8), b"wxyz")
            assert again.lookup(bytes(8)) == b"wxyz"


# ---------------------------------------------------------------------------------------------
# programs


def test_prog_load_and_info_against_bpftool(bpftool: str) -> None:
    with socket_filter(RET0, name="pybpf_ret0") as fd:
        info = S.prog_info(fd.fileno(), xlated=True)
        show = run_bpftool(bpftool, "prog", "show", "id", str(info.id))
        assert show["id"] == info.id
        assert show["name"] == info.name == "pybpf_ret0"
        assert show["tag"] == info.tag
        assert show["type"] == "socket_filter"
        assert info.type == U.BPF_PROG_TYPE_SOCKET_FILTER
        assert info.gpl_compatible
        assert info.xlated_insns == RET0
        assert info.map_ids == []


def test_prog_info_lists_map_ids(root: None) -> None:
    with M.Map.create(M.MapSpec("events", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 4)) as m:
        with socket_filter(perf_output_prog(m.fd)) as fd:
            assert S.prog_info(fd.fileno()).map_ids == [m.info().id]


def test_verifier_error_carries_log(root: None) -> None:
    with pytest.raises(VerifierError) as exc:
        socket_filter(EXIT_ONLY)
    assert "R0 !read_ok" in exc.value.log
    assert exc.value.errno == errno.EACCES
    assert str(exc.value).startswith("BPF_PROG_LOAD: Permission denied (EACCES)")
    assert "R0 !read_ok" in str(exc.value)  # the summary line is in the message


def test_verifier_log_grows_past_a_small_buffer(root: None) -> None:
    # 200 instructions then an exit with r0 unset: a log much longer than 128 bytes.
    long_bad = insn(0xB7, 1, imm=1) * 200 + EXIT_ONLY
    with pytest.raises(VerifierError) as exc:
        S.prog_load(U.BPF_PROG_TYPE_SOCKET_FILTER, long_bad, log_level=1, log_size=128)
    assert exc.value.errno == errno.EACCES  # not ENOSPC: the buffer was grown
    assert "R0 !read_ok" in exc.value.log
    assert exc.value.log.startswith("func#0") or exc.value.log.startswith("0:")

    fd, log = S.prog_load_log(U.BPF_PROG_TYPE_SOCKET_FILTER, RET0, log_level=2, log_size=128)
    with fd:
        assert "processed 2 insns" in log


def test_iter_prog_ids_sees_load_and_unload(root: None) -> None:
    fd = socket_filter(RET0, name="pybpf_iter")
    prog_id = S.prog_info(fd.fileno()).id
    assert prog_id in set(S.iter_prog_ids())
    with S.prog_get_fd_by_id(prog_id) as again:
        assert S.prog_info(again.fileno()).name == "pybpf_iter"
    fd.close()
    # Programs are freed after an RCU grace period: wait for the id to disappear.
    for _ in range(200):
        if prog_id not in set(S.iter_prog_ids()):
            break
        time.sleep(0.01)
    assert prog_id not in set(S.iter_prog_ids())


def test_prog_test_run_retval_and_stats(root: None) -> None:
    with socket_filter(ret_imm(7), name="ret7") as fd:
        with S.enable_stats():
            res = S.prog_test_run(fd.fileno(), bytes(64), repeat=5)
            assert res.retval == 7
            info = S.prog_info(fd.fileno())
            assert info.run_cnt == 5
        res = S.prog_test_run(fd.fileno(), bytes(64))
        assert res.retval == 7
        with pytest.raises(BPFSyscallError) as exc:
            S.prog_test_run(fd.fileno(), bytes(4))  # shorter than an Ethernet header
        assert exc.value.errno == errno.EINVAL


def test_raw_tracepoint_link(bpftool: str) -> None:
    with S.prog_load(U.BPF_PROG_TYPE_RAW_TRACEPOINT, RET0, name="rawtp") as prog:
        res = S.prog_test_run(prog.fileno(), ctx_in=bytes(16))
        assert res.retval == 0
        with S.raw_tracepoint_open(prog.fileno(), "sched_switch") as link:
            info = S.link_info(link.fileno())
            assert info.type == U.BPF_LINK_TYPE_RAW_TRACEPOINT
            assert info.tp_name == "sched_switch"
            assert info.prog_id == S.prog_info(prog.fileno()).id
            assert info.id in set(S.iter_link_ids())
            show = run_bpftool(bpftool, "link", "show", "id", str(info.id))
            assert show["prog_id"] == info.prog_id
            assert show["tp_name"] == "sched_switch"


def _btf(types: bytes, strings: bytes, magic: int = 0xEB9F) -> bytes:
    hdr = struct.pack("<HBBIIIII", magic, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_btf_load(root: None) -> None:
    # one BTF_KIND_INT "int": signed, 32 bits
    int_type = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)
    with S.btf_load(_btf(int_type, b"\0int\0")) as fd:
        assert fd.fileno() > 0
    bad = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 64)  # 64 bits in 4 bytes
    with pytest.raises(VerifierError) as exc:
        S.btf_load(_btf(bad, b"\0int\0"))
    assert exc.value.errno == errno.EINVAL
    assert exc.value.log


# ---------------------------------------------------------------------------------------------
# perf buffer


@pytest.fixture
def on_cpu0(root: None):
    """Pin this thread to CPU 0: BPF_F_CURRENT_CPU output then lands in ring 0."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def _packet(i: int) -> bytes:
    # 14-byte Ethernet header then a payload of varying length and content
    n = 14 + (i * 37) % 201
    return bytes((i * 7 + j) & 0xFF for j in range(n))


def _expected_sample(pkt: bytes) -> tuple[bytes, int]:
    """(raw bytes the program output, padded length the callback receives)."""
    payload = pkt[14:]  # socket filters see the packet after the Ethernet header
    raw = struct.pack("<Q", len(payload)) + payload
    pad = (-(4 + len(raw))) % 8  # u32 size + raw data is padded to 8 bytes
    return raw, len(raw) + pad


def _check_sample(data: bytes, pkt: bytes) -> None:
    raw, padded = _expected_sample(pkt)
    assert len(data) == padded
    # The pad bytes are not zeroed: the kernel skips them (__output_skip), leaving stale ring
    # contents.
    assert data[: len(raw)] == raw


def test_perf_buffer_samples_and_wraparound(on_cpu0: None) -> None:
    received: list[tuple[int, bytes]] = []
    lost: list[tuple[int, int]] = []
    with M.Map.create(
        M.MapSpec("events", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, len(S.possible_cpus()))
    ) as events:
        pb = P.PerfBuffer(
            events.fd,
            page_count=1,
            on_sample=lambda cpu, data: received.append((cpu, data)),
            on_lost=lambda cpu, n: lost.append((cpu, n)),
        )
        with pb, socket_filter(perf_output_prog(events.fd), name="perf_out") as prog:
            assert 0 in pb.cpus
            packets = [_packet(i) for i in range(400)]
            offset, wrapped = 0, 0
            for i, pkt in enumerate(packets):
                S.prog_test_run(prog.fileno(), pkt)
                # poll (epoll wakeup) and consume (no wait) alternately
                got = pb.poll(1000) if i % 2 else pb.consume()
                assert got == 1
                size = 8 + 4 + _expected_sample(pkt)[1]
                wrapped += (offset % 4096) + size > 4096
                offset += size
            assert pb.poll(0) == 0
    assert wrapped > 5  # records straddled the ring end this many times
    assert lost == []
    assert [cpu for cpu, _ in received] == [0] * len(packets)
    assert len(received) == len(packets)
    for (_, data), pkt in zip(received, packets):
        _check_sample(data, pkt)


def test_perf_buffer_reports_lost_samples(on_cpu0: None) -> None:
    received: list[bytes] = []
    lost: list[tuple[int, int]] = []
    with M.Map.create(
        M.MapSpec("events", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, len(S.possible_cpus()))
    ) as events:
        pb = P.PerfBuffer(
            events.fd,
            page_count=1,
            on_sample=lambda cpu, data: received.append(data),
            on_lost=lambda cpu, n: lost.append((cpu, n)),
        )
        with pb, socket_filter(perf_output_prog(events.fd)) as prog:
            pkt = _packet(3)
            S.prog_test_run(prog.fileno(), pkt, repeat=1000)  # fills the 4 KiB ring
            first = pb.consume()
            assert 0 < first < 1000
            assert lost == []
            # The kernel writes the PERF_RECORD_LOST before the next sample that fits.
            S.prog_test_run(prog.fileno(), pkt)
            assert pb.consume() == 2
            assert pb.lost == 1000 - first
    assert lost == [(0, 1000 - first)]
    assert len(received) == first + 1
    for data in received:
        _check_sample(data, pkt)


def test_perf_buffer_close_clears_map_and_is_idempotent(root: None) -> None:
    ncpu = len(S.possible_cpus())
    with M.Map.create(M.MapSpec("events", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, ncpu)) as ev:
        pb = P.PerfBuffer(ev.fd, page_count=2, on_sample=lambda cpu, data: None)
        assert pb.cpus == [c for c in P.online_cpus() if c < ncpu]
        assert pb.poll(0) == 0
        cpus = pb.cpus
        pb.close()
        pb.close()
        with pytest.raises(PyBPFError):
            pb.poll(0)
        # the events were deleted from the map: deleting again finds empty slots
        for cpu in cpus:
            assert ev.delete(struct.pack("<I", cpu)) is False


def test_perf_buffer_needs_perf_event_array(root: None) -> None:
    with M.Map.create(M.MapSpec("notperf", U.BPF_MAP_TYPE_ARRAY, 4, 4, 2)) as m:
        with pytest.raises(PyBPFError, match="PERF_EVENT_ARRAY"):
            P.PerfBuffer(m.fd, on_sample=lambda cpu, data: None)


def test_perf_buffer_watermark_batches_wakeups(on_cpu0: None) -> None:
    """wakeup_bytes (perf_event_attr.watermark): no wakeup until that many bytes wait, so
    the epoll fd stays quiet for one sample; poll() drains every ring after its timeout, and
    on_batch gets all of a ring's samples at once.  Past the watermark the kernel wakes us."""
    import select

    batches: list[tuple[int, list[bytes]]] = []
    with M.Map.create(
        M.MapSpec("events", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, len(S.possible_cpus()))
    ) as events:
        pb = P.PerfBuffer(events.fd, page_count=2, wakeup_bytes=4096,
                          on_batch=lambda cpu, samples: batches.append((cpu, samples)))  # fmt: skip
        with pb, socket_filter(perf_output_prog(events.fd)) as prog:
            pkts = [_packet(i) for i in range(3)]
            for pkt in pkts:
                S.prog_test_run(prog.fileno(), pkt)
            assert select.select([pb.fileno()], [], [], 0.1)[0] == []  # below the watermark
            t0 = time.monotonic()
            assert pb.poll(150) == 3
            assert time.monotonic() - t0 >= 0.1
            assert len(batches) == 1 and batches[0][0] == 0
            for data, pkt in zip(batches[0][1], pkts):
                _check_sample(data, pkt)
            pkt = _packet(5)
            n = 4096 // (8 + 4 + _expected_sample(pkt)[1]) + 2  # just past the watermark
            S.prog_test_run(prog.fileno(), pkt, repeat=n)
            assert select.select([pb.fileno()], [], [], 1.0)[0] == [pb.fileno()]
            assert pb.poll(0) == n
    with pytest.raises(PyBPFError, match="wakeup_bytes"):
        P.PerfBuffer(0, page_count=1, wakeup_bytes=4096, on_sample=lambda c, d: None)
