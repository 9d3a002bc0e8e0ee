"""Perf buffer reader for BPF_MAP_TYPE_PERF_EVENT_ARRAY (what libbpf's ``perf_buffer`` does).

``bpf_perf_event_output()`` (4.4) writes a PERF_RECORD_SAMPLE into the perf ring of the
event stored in the map at the current CPU's index.  This module opens one
PERF_COUNT_SW_BPF_OUTPUT event per online CPU, mmaps its ring, stores the event fds into the
map, and reads the rings from Python.

Ring protocol (``struct perf_event_mmap_page``): the kernel advances ``data_head`` (offset
1024), the reader consumes up to it and publishes ``data_tail`` (offset 1032).  On x86-64
(TSO) plain loads and stores give the ordering the protocol needs; weaker architectures
would need barriers pure Python cannot emit, so aarch64 support is best effort.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Callable, Optional

from . import syscall as _sys
from .epoll import Epoll
from .errors import BPFSyscallError, PyBPFError
from .uapi import BPF_MAP_TYPE_PERF_EVENT_ARRAY

PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9


_HDR = struct.Struct("=IHH")  # struct perf_event_header: type, misc, size
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_LOST = struct.Struct("=QQ")  # PERF_RECORD_LOST body: id, lost
_DATA_HEAD = 1024
_DATA_TAIL = 1032
_DATA_OFFSET = 1040  # 4.1; zero before (data then starts at the second page)
_DATA_SIZE = 1048


def online_cpus() -> list[int]:
    """CPUs online now ("0-1,3" in /sys/devices/system/cpu/online -> [0, 1, 3])."""
    with open("/sys/devices/system/cpu/online") as f:
        return _sys.parse_cpu_list(f.read())


class _Ring:
    __slots__ = ("cpu", "fd", "mm", "base", "size", "mask", "tail_view")

    def __init__(self, cpu: int, fd: _sys.FD, mm: mmap.mmap, page_size: int, npages: int):
        self.cpu = cpu
        self.fd = fd
        self.mm = mm
        base, size = _U64.unpack_from(mm, _DATA_OFFSET)[0], _U64.unpack_from(mm, _DATA_SIZE)[0]
        self.base = base or page_size
        self.size = size or npages * page_size
        self.mask = self.size - 1
        # data_tail as a u64 (offset 1032 = 129 * 8): stored with one 8-byte write.
        self.tail_view = memoryview(mm)[: page_size].cast("Q")


class PerfBuffer(_sys.Closing):
    """Per-CPU perf rings behind a BPF_MAP_TYPE_PERF_EVENT_ARRAY, read with one epoll.

    ``on_sample(cpu, data)`` receives the PERF_SAMPLE_RAW bytes of each sample.  The kernel
    pads the raw data so that its u32 size field plus the data is a multiple of 8 bytes, and
    reports the padded size: ``data`` can carry up to 7 trailing bytes beyond what the
    program passed to ``bpf_perf_event_output()``, so unpack a fixed-size struct prefix
    (``struct.unpack_from``) rather than the whole of ``data``.  ``on_lost(cpu, count)`` is
    called when the kernel dropped samples because the ring was full; without it the counts
    only accumulate in :attr:`lost`.

    ``page_count`` data pages per CPU (a power of two); one more page holds the ring header.

    Wakeups: by default the kernel wakes the reader for every sample (``wakeup_events=1``, as
    libbpf), which costs an IRQ-work self-interrupt per event (~6.3 µs of kernel time on a
    VM).  ``wakeup_bytes=N`` sets a watermark instead (``perf_event_attr.watermark``, 2.6.38):
    the kernel wakes the reader only once N bytes are waiting, and :meth:`poll` drains every
    ring after its timeout, which bounds how long a sample waits.  ``on_batch(cpu, samples)``
    receives each drained ring's samples as one list (instead of ``on_sample`` per sample).
    """

    def __init__(
        self,
        map_fd: int,
        page_count: int = 64,
        *,
        on_sample: Optional[Callable[[int, bytes], None]] = None,
        on_lost: Optional[Callable[[int, int], None]] = None,
        on_batch: Optional[Callable[[int, list[bytes]], None]] = None,
        wakeup_bytes: int = 0,
    ) -> None:
        if page_count <= 0 or page_count & (page_count - 1):
            raise PyBPFError(f"perf buffer page_count must be a power of two, got {page_count}")
        if (on_sample is None) == (on_batch is None):
            raise PyBPFError("perf buffer: give exactly one of on_sample and on_batch")
        if on_batch is None:
            sample = on_sample

            def on_batch(cpu: int, samples: list[bytes]) -> None:
                for data in samples:
                    sample(cpu, data)  # type: ignore[misc]

        if wakeup_bytes < 0 or wakeup_bytes >= page_count * mmap.PAGESIZE:
            raise PyBPFError(
                f"perf buffer wakeup_bytes must be below the ring size "
                f"({page_count * mmap.PAGESIZE}), got {wakeup_bytes}"
            )
        self._on_batch = on_batch
        self._wakeup_bytes = wakeup_bytes
        self._on_lost = on_lost
        self.lost = 0
        self._rings: dict[int, _Ring] = {}
        self._epoll: Optional[Epoll] = None
        self._closed = False
        # Own a duplicate of the map fd: close() deletes our entries from the map, which must
        # not hit another object if the caller closes the map first and the number is reused.
        self._map = _sys.FD(os.dup(map_fd.fileno() if hasattr(map_fd, "fileno") else map_fd))
        try:
            self._open(page_count)
        except BaseException:
            self.close()
            raise

    def _open(self, page_count: int) -> None:
        info = _sys.map_info(self._map.fileno())
        if info.type != BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            raise PyBPFError(
                f"perf buffer needs a BPF_MAP_TYPE_PERF_EVENT_ARRAY map, map {info.name!r} "
                f"has type {info.type}"
            )
        # bpf_perf_event_output(BPF_F_CURRENT_CPU) indexes the map by CPU number; CPUs past
        # max_entries cannot be served (libbpf does the same).
        cpus = [c for c in online_cpus() if c < info.max_entries]
        self._epoll = epoll = Epoll(len(cpus))
        page_size = mmap.PAGESIZE
        length = (1 + page_count) * page_size
        for cpu in cpus:
            attr = _sys.PerfEventAttr(
                type=_sys.PERF_TYPE_SOFTWARE,
                config=_sys.PERF_COUNT_SW_BPF_OUTPUT,
                sample_type=_sys.PERF_SAMPLE_RAW,
                sample_period=1,
                wakeup_events=self._wakeup_bytes or 1,  # a union: wakeup_watermark
            )
            if self._wakeup_bytes:
                attr.flags |= _sys.PERF_ATTR_FLAG_WATERMARK
            fd = _sys.perf_event_open(attr, -1, cpu, -1, _sys.PERF_FLAG_FD_CLOEXEC)
            try:
                mm = mmap.mmap(
                    fd.fileno(), length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
            except OSError as exc:
                fd.close()
                raise BPFSyscallError(
                    _sys.error_message(f"mmap perf ring (cpu {cpu}, {length} bytes)", exc.errno)
                    + " (see /proc/sys/kernel/perf_event_mlock_kb)",
                    exc.errno or 0,
                ) from None
            ring = _Ring(cpu, fd, mm, page_size, page_count)
            self._rings[cpu] = ring
            _sys.map_update_elem(self._map.fileno(), _U32.pack(cpu), _U32.pack(fd.fileno()), 0)
            _sys.ioctl(fd.fileno(), _sys.PERF_EVENT_IOC_ENABLE, 0)
            epoll.add(fd.fileno(), cpu)

    @property
    def cpus(self) -> list[int]:
        """CPUs with a ring."""
        return sorted(self._rings)

    def fileno(self) -> int:
        """The epoll fd: readable when some ring has data (to nest in another event loop)."""
        assert self._epoll is not None
        return self._epoll.fd

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to ``timeout_ms`` (-1: forever) for data, then drain the rings that have it.

        Returns the number of records consumed (samples and lost-sample reports).  A signal
        interrupts the wait and returns 0, so Python handlers (Ctrl-C, SIGTERM) run promptly;
        epoll_wait goes through ctypes for that, as the ``select`` module retries on EINTR.
        """
        if self._closed:
            raise PyBPFError("perf buffer is closed")
        assert self._epoll is not None
        ready = self._epoll.wait(timeout_ms)
        if ready is None:  # a signal: let its handler run
            return 0
        if self._wakeup_bytes:
            # Rings below their watermark sent no wakeup: the timeout is their deadline.
            return self.consume()
        rings = self._rings
        return sum(self._drain(rings[cpu]) for cpu in ready)

    def consume(self) -> int:
        """Drain every ring without waiting (at shutdown: flush what already arrived)."""
        if self._closed:
            raise PyBPFError("perf buffer is closed")
        total = 0
        for ring in self._rings.values():
            total += self._drain(ring)
        return total

    def _drain(self, ring: _Ring) -> int:
        mm = ring.mm
        head = _U64.unpack_from(mm, _DATA_HEAD)[0]
        tail = _U64.unpack_from(mm, _DATA_TAIL)[0]
        if tail >= head:
            return 0
        base, size, mask, cpu = ring.base, ring.size, ring.mask, ring.cpu
        samples: list[bytes] = []
        append = samples.append
        hdr_unpack = _HDR.unpack_from
        u32_unpack = _U32.unpack_from
        n = 0
        try:
            while tail < head:
                off = tail & mask
                # Records are 8-byte aligned and the ring size is a power of two: the 8-byte
                # header never straddles the end; the body may.
                typ, _misc, rsize = hdr_unpack(mm, base + off)
                if rsize < 8:  # corrupt ring: skip to head rather than spin
                    tail = head
                    break
                end = off + rsize
                tail += rsize
                if end <= size:
                    rec = mm
                    start = base + off
                else:  # wraps around: copy the two pieces
                    rec = mm[base + off : base + size] + mm[base : base + end - size]
                    start = 0
                n += 1
                if typ == PERF_RECORD_SAMPLE:
                    raw = u32_unpack(rec, start + 8)[0]
                    append(rec[start + 12 : start + 12 + raw])
                elif typ == PERF_RECORD_LOST:
                    lost = _LOST.unpack_from(rec, start + 8)[1]
                    self.lost += lost
                    if self._on_lost is not None:
                        self._on_lost(cpu, lost)
        finally:
            # Publish what was consumed (samples are copied out), even if a callback raised.
            # One 8-byte store: struct.pack_into would zero data_tail first, for a moment.
            ring.tail_view[_DATA_TAIL // 8] = tail
        if samples:
            self._on_batch(cpu, samples)
        return n

    def close(self) -> None:
        """Remove the events from the map, unmap the rings, close the fds (idempotent)."""
        if self._closed:
            return
        self._closed = True
        rings, self._rings = self._rings, {}
        for cpu, ring in rings.items():
            # The map holds a reference to the perf event: delete it or the event outlives us.
            try:
                _sys.map_delete_elem(self._map.fileno(), _U32.pack(cpu))
            except (PyBPFError, OSError):
                pass
            ring.tail_view.release()  # an exported buffer would make mmap.close() fail
            ring.mm.close()
            ring.fd.close()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._map.close()
