"""epoll(7) through ctypes, for the ring and perf buffer readers.

Not the ``select`` module's epoll: it retries a wait that a signal interrupted, so Ctrl-C or
SIGTERM would wait out the whole timeout; here EINTR ends the wait at once and Python's
signal handlers run.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import Optional

from . import syscall as _sys
from .errors import BPFSyscallError

EPOLLIN = 0x001
EPOLL_CTL_ADD = 1
EPOLL_CLOEXEC = 0o2000000


class _EpollEventPacked(ctypes.Structure):
    """struct epoll_event on x86-64, where it is __attribute__((packed))."""

    _pack_ = 1
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class _EpollEvent(ctypes.Structure):
    """struct epoll_event elsewhere (natural alignment)."""

    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


def epoll_event_type() -> type:
    return _EpollEventPacked if os.uname().machine == "x86_64" else _EpollEvent


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise BPFSyscallError(_sys.error_message(what, err), err)


class Epoll:
    """An epoll instance whose events carry an integer (a CPU number, a ring index)."""

    def __init__(self, max_events: int = 1) -> None:
        self.fd = _sys.libc().epoll_create1(EPOLL_CLOEXEC)
        if self.fd < 0:
            _raise("epoll_create1")
        self._type = epoll_event_type()
        self._events = (self._type * max(1, max_events))()

    def add(self, fd: int, data: int = 0) -> None:
        """Wake on ``fd`` being readable; :meth:`wait` then reports ``data``."""
        ev = self._type(events=EPOLLIN, data=data)
        if _sys.libc().epoll_ctl(self.fd, EPOLL_CTL_ADD, fd, ctypes.byref(ev)) < 0:
            _raise("epoll_ctl")

    def wait(self, timeout_ms: int) -> Optional[list[int]]:
        """The data of the ready fds (empty after a timeout), or None when a signal came."""
        events = self._events
        n = _sys.libc().epoll_wait(self.fd, events, len(events), int(timeout_ms))
        if n < 0:
            if ctypes.get_errno() == _errno.EINTR:
                return None
            _raise("epoll_wait")
        return [events[i].data for i in range(n)]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
