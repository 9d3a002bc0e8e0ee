"""BPF ring buffer reader for BPF_MAP_TYPE_RINGBUF (Linux 5.8; what libbpf's ``ring_buffer`` does).

One ring shared by every CPU (``kernel/bpf/ringbuf.c``).  User space maps it in two pieces:

- offset 0, one page, read-write: ``consumer_pos`` (u64 at 0), which only the reader advances;
- offset one page, read-only: the producer page (``producer_pos`` at 0), then the data area.
  The kernel offers the data area twice back to back (so a record that wraps is contiguous).

The kernel maps every page of a ring-buffer mapping at ``mmap`` time, so each mapped page
counts in the process's RSS from the start: a 16 MiB ring mapped whole costs 16 MiB of RSS
(32 MiB twice over).  This reader maps the producer page on its own and the data area through
a sliding *window* (by default 512 KiB: two 256 KiB chunks of the doubled area, moved as the
consumer advances; a record larger than the window gets a window of its own), so its RSS does
not grow with the ring's size while the ring keeps its full capacity in the kernel.  At 400k
records of 56 bytes per second the window moves ~90 times a second (one munmap + mmap each).

Each record starts with an 8-byte header: ``u32 len`` whose bit 31 (BPF_RINGBUF_BUSY_BIT)
says the producer has reserved but not yet committed it and bit 30 (BPF_RINGBUF_DISCARD_BIT)
that it was discarded, then ``u32 pg_off``; the record takes ``round_up(len + 8, 8)`` bytes.
A busy record stops the reader: records after it are not visible yet, in order.

Wakeups: a program may output with ``BPF_RB_NO_WAKEUP`` and let the reader poll on a timer
(:meth:`RingBuffer.poll` always drains after its wait, even when nothing woke it), which removes
the per-event IRQ-work cost (~6 µs on a VM) while bounding the display delay by the timeout.

On x86-64 (TSO) plain loads and stores give the acquire/release ordering the protocol needs;
weaker architectures would need barriers pure Python cannot emit (best effort on aarch64).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Callable, Optional

from . import syscall as _sys
from .epoll import Epoll
from .errors import BPFSyscallError, PyBPFError
from .uapi import BPF_MAP_TYPE_RINGBUF

BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

# Flags of bpf_ringbuf_output()/_submit()/_discard() and bpf_ringbuf_query() (5.8).
BPF_RB_NO_WAKEUP = 1 << 0
BPF_RB_FORCE_WAKEUP = 1 << 1
BPF_RB_AVAIL_DATA = 0
BPF_RB_RING_SIZE = 1
BPF_RB_CONS_POS = 2
BPF_RB_PROD_POS = 3


# Bytes of the data area one window step covers (the window maps two steps).
WINDOW_CHUNK = 256 << 10
# Ring bytes handed to the callback at most per batch: a reader that fell behind by most of a
# 16 MiB ring drains it in batches, so its Python memory stays bounded by this, not the ring.
BATCH_BYTES = 256 << 10

_HDR = BPF_RINGBUF_HDR_SZ
_BUSY = BPF_RINGBUF_BUSY_BIT
_DISCARD = BPF_RINGBUF_DISCARD_BIT
_SIZE_MASK = ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) & 0xFFFFFFFF

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


class RingBuffer(_sys.Closing):
    """Reader of one BPF_MAP_TYPE_RINGBUF map.

    ``on_batch(records)`` receives the records drained in one go as a list of ``bytes``
    (the exact length the program committed), in batches of at most ~``BATCH_BYTES`` of
    ring space; alternatively ``on_sample(data)`` is called
    once per record.  The consumer position is published before the callback runs, so the
    kernel can reuse the space while Python formats the batch.
    """

    def __init__(
        self,
        map_fd: int,
        *,
        on_sample: Optional[Callable[[bytes], None]] = None,
        on_batch: Optional[Callable[[list[bytes]], None]] = None,
        window_chunk: int = WINDOW_CHUNK,
    ) -> None:
        if (on_sample is None) == (on_batch is None):
            raise PyBPFError("ring buffer: give exactly one of on_sample and on_batch")
        if on_batch is None:
            sample = on_sample

            def on_batch(records: list[bytes]) -> None:
                for rec in records:
                    sample(rec)  # type: ignore[misc]

        self._on_batch = on_batch
        self._closed = False
        self._epoll: Optional[Epoll] = None
        self._cons: Optional[mmap.mmap] = None
        self._cons_pos: Optional[memoryview] = None
        self._prod: Optional[mmap.mmap] = None
        self._win: Optional[mmap.mmap] = None
        self._win_start = self._win_end = 0  # data offsets the window covers
        self._chunk = window_chunk
        self._map = _sys.FD(os.dup(map_fd.fileno() if hasattr(map_fd, "fileno") else map_fd))
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        info = _sys.map_info(self._map.fileno())
        if info.type != BPF_MAP_TYPE_RINGBUF:
            raise PyBPFError(
                f"ring buffer needs a BPF_MAP_TYPE_RINGBUF map, map {info.name!r} has type "
                f"{info.type}"
            )
        page = mmap.PAGESIZE
        self.size = info.max_entries
        self._mask = self.size - 1
        if self._chunk <= 0 or self._chunk % page:
            raise PyBPFError(f"ring buffer window chunk must be a multiple of {page} bytes")
        self._chunk = min(self._chunk, self.size)  # both powers of two: chunk divides size
        self._name = info.name
        fd = self._map.fileno()
        try:
            self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._prod = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except OSError as exc:
            raise self._mmap_error(exc) from None
        self._map_window(0, 2 * self._chunk)
        # consumer_pos is stored through a u64 view: one 8-byte store.  struct.pack_into
        # zero-fills its destination before it writes the value (CPython's s_pack_internal
        # memsets the whole item first), so for a moment the kernel would see consumer_pos
        # == 0 and refuse every reserve ("new_prod_pos - cons_pos > mask": -EAGAIN).
        self._cons_pos = memoryview(self._cons).cast("Q")
        self._epoll = Epoll(1)
        self._epoll.add(fd)

    def _mmap_error(self, exc: OSError) -> BPFSyscallError:
        return BPFSyscallError(
            _sys.error_message(f"mmap ring buffer {self._name!r}", exc.errno or 0),
            exc.errno or 0,
        )

    def _map_window(self, start: int, length: int) -> None:
        """Map ``length`` bytes of the doubled data area from data offset ``start`` (both
        page multiples, ``start + length <= 2 * size``), unmapping the previous window
        first so that the two never count in RSS together."""
        if self._win is not None:
            self._win.close()
            self._win = None
        page = mmap.PAGESIZE
        try:
            self._win = mmap.mmap(self._map.fileno(), length, mmap.MAP_SHARED, mmap.PROT_READ,
                                  offset=2 * page + start)
        except OSError as exc:
            raise self._mmap_error(exc) from None
        self._win_start, self._win_end = start, start + length

    def _window_for(self, off: int, length: int) -> None:
        """A window holding data bytes ``off .. off + length`` (``off < size``)."""
        start = off - off % self._chunk
        need = off + length - start
        span = max(2 * self._chunk, -(-need // mmap.PAGESIZE) * mmap.PAGESIZE)
        self._map_window(start, span)

    def fileno(self) -> int:
        """The epoll fd (readable when the kernel sent a wakeup), for other event loops."""
        assert self._epoll is not None
        return self._epoll.fd

    @property
    def available(self) -> int:
        """Bytes committed or reserved and not consumed yet (BPF_RB_AVAIL_DATA's view)."""
        assert self._cons is not None and self._prod is not None
        return _U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0]

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to ``timeout_ms`` for a wakeup, then drain whatever is there.

        Draining after a timeout too is what makes ``BPF_RB_NO_WAKEUP`` producers work: the
        timeout bounds how long a record can wait.  A signal ends the wait early (EINTR) so
        Python handlers run promptly.  Returns the number of records consumed.
        """
        if self._closed:
            raise PyBPFError("ring buffer is closed")
        assert self._epoll is not None
        if self._epoll.wait(timeout_ms) is None:  # a signal: let its handler run
            return 0
        return self.consume()

    def consume(self) -> int:
        """Drain every committed record without waiting; returns how many were delivered."""
        if self._closed:
            raise PyBPFError("ring buffer is closed")
        cons, prod = self._cons, self._prod
        assert cons is not None and prod is not None
        u32 = _U32.unpack_from
        mask = self._mask
        pos = _U64.unpack_from(cons, 0)[0]
        end = _U64.unpack_from(prod, 0)[0]
        batch = BATCH_BYTES
        delivered = 0
        # One pass up to the producer position read now: a producer faster than Python
        # cannot keep us here forever (the caller polls again).  Batches of ~BATCH_BYTES.
        while pos < end:
            records: list[bytes] = []
            append = records.append
            win, ws = self._win, self._win_start
            span = self._win_end - ws  # offsets below are relative to the window
            batch_end = min(end, pos + batch)
            while pos < batch_end:
                rel = (pos & mask) - ws
                if rel < 0 or rel > span - _HDR:
                    self._window_for(pos & mask, _HDR)
                    win, ws = self._win, self._win_start
                    span = self._win_end - ws
                    rel = (pos & mask) - ws
                length = u32(win, rel)[0]  # type: ignore[arg-type]
                if length & _BUSY:
                    end = pos  # reserved, not committed yet: later records must wait too
                    break
                size = length & _SIZE_MASK
                if not length & _DISCARD:
                    rel += _HDR
                    if rel + size > span:  # the record runs past the window: move it
                        self._window_for(pos & mask, _HDR + size)
                        win, ws = self._win, self._win_start
                        span = self._win_end - ws
                        rel = (pos & mask) - ws + _HDR
                    # the kernel maps the data area twice: a wrapped record is contiguous
                    append(win[rel : rel + size])  # type: ignore[index]
                pos += (size + _HDR + 7) & ~7
            delivered += self._deliver(records, pos)
            if self._closed:  # the callback closed the reader
                break
        return delivered

    def _deliver(self, records: list[bytes], pos: int) -> int:
        # Records are copied out: hand the space back before the (slow) callback.
        self._cons_pos[0] = pos  # type: ignore[index]  # one store, never a torn/zero value
        if records:
            self._on_batch(records)
        return len(records)

    def close(self) -> None:
        """Unmap, close the epoll fd and our duplicate of the map fd (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._cons_pos is not None:
            self._cons_pos.release()  # an exported buffer would make mmap.close() fail
            self._cons_pos = None
        for mm in (self._cons, self._prod, self._win):
            if mm is not None:
                mm.close()
        self._cons = self._prod = self._win = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._map.close()
