"""bpf(2), perf_event_open(2) and ioctl(2) through ctypes.

This is the only module that talks to the kernel about BPF objects.  Each command's piece of
``union bpf_attr`` is a ctypes structure laid out as in ``include/uapi/linux/bpf.h`` (field
names kept).  The attribute size passed to the kernel is the smallest that covers the non-zero
fields (:func:`attr_size`): a kernel rejects non-zero bytes past the fields it knows, so an old
kernel still accepts calls that leave newer fields at zero.

Import cost is kept to defining structures: libc is opened on first use.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import Any, Iterator, Optional, Sequence, TypeVar

from .abi import (  # noqa: F401  (re-exported: callers use pybpf.syscall.BPF_*)
    BPF_BTF_GET_FD_BY_ID,
    BPF_BTF_GET_NEXT_ID,
    BPF_BTF_LOAD,
    BPF_ENABLE_STATS,
    BPF_ITER_CREATE,
    BPF_LINK_CREATE,
    BPF_LINK_DETACH,
    BPF_LINK_GET_FD_BY_ID,
    BPF_LINK_GET_NEXT_ID,
    BPF_LINK_UPDATE,
    BPF_MAP_CREATE,
    BPF_MAP_DELETE_BATCH,
    BPF_MAP_DELETE_ELEM,
    BPF_MAP_FREEZE,
    BPF_MAP_GET_FD_BY_ID,
    BPF_MAP_GET_NEXT_ID,
    BPF_MAP_GET_NEXT_KEY,
    BPF_MAP_LOOKUP_AND_DELETE_BATCH,
    BPF_MAP_LOOKUP_AND_DELETE_ELEM,
    BPF_MAP_LOOKUP_BATCH,
    BPF_MAP_LOOKUP_ELEM,
    BPF_MAP_UPDATE_BATCH,
    BPF_MAP_UPDATE_ELEM,
    BPF_OBJ_GET,
    BPF_OBJ_GET_INFO_BY_FD,
    BPF_OBJ_PIN,
    BPF_PROG_ATTACH,
    BPF_PROG_BIND_MAP,
    BPF_PROG_DETACH,
    BPF_PROG_GET_FD_BY_ID,
    BPF_PROG_GET_NEXT_ID,
    BPF_PROG_LOAD,
    BPF_PROG_QUERY,
    BPF_PROG_TEST_RUN,
    BPF_RAW_TRACEPOINT_OPEN,
    BPF_STATS_RUN_TIME,
    BPF_TASK_FD_QUERY,
    bpf_cmd,
)
from .abi_attrs import (  # noqa: F401  (re-exported)
    BPFLinkInfo,
    BPFMapInfo,
    BPFProgInfo,
    BTFLoadAttr,
    EnableStatsAttr,
    GetIdAttr,
    InfoAttr,
    LinkCreateAttr,
    MapBatchAttr,
    MapCreateAttr,
    MapElemAttr,
    ObjAttr,
    ProgLoadAttr,
    RawTracepointAttr,
    TestRunAttr,
)
from .errors import BPFSyscallError, PyBPFError, VerifierError
from .uapi import BPF_LINK_TYPE_RAW_TRACEPOINT, BPF_LINK_TYPE_TRACING

# --------------------------------------------------------------------------------------------
_CMD_NAMES = {int(v): v.name for v in bpf_cmd.members().values()}


# prog_flags
BPF_F_STRICT_ALIGNMENT = 1 << 0
BPF_F_ANY_ALIGNMENT = 1 << 1
BPF_F_TEST_RND_HI32 = 1 << 2
BPF_F_TEST_STATE_FREQ = 1 << 3
BPF_F_SLEEPABLE = 1 << 4
BPF_F_XDP_HAS_FRAGS = 1 << 5
BPF_F_XDP_DEV_BOUND_ONLY = 1 << 6

# BPF_PROG_TEST_RUN flags
BPF_F_TEST_RUN_ON_CPU = 1 << 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

# verifier log levels
BPF_LOG_LEVEL1 = 1
BPF_LOG_LEVEL2 = 2
BPF_LOG_STATS = 4
BPF_LOG_FIXED = 8  # 6.4: keep the head of the log instead of rotating to keep the tail

BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8

# Verifier log buffer: kernels <= 5.1 reject log_size > UINT_MAX >> 8 (libbpf uses the same).
LOG_BUF_SIZE = 0xFFFFFFFF >> 8
# Largest log_size any kernel accepts (UINT_MAX >> 2).
LOG_BUF_SIZE_MAX = 0xFFFFFFFF >> 2

# perf_event_open(2)
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_NO_GROUP = 1 << 0
PERF_FLAG_FD_OUTPUT = 1 << 1
PERF_FLAG_PID_CGROUP = 1 << 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
# perf_event_attr.flags bits (the kernel's bitfield order)
PERF_ATTR_FLAG_DISABLED = 1 << 0
PERF_ATTR_FLAG_WATERMARK = 1 << 14  # wakeup_events holds wakeup_watermark (bytes), 2.6.38
PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
PERF_EVENT_IOC_DISABLE = 0x2401  # _IO('$', 1)
PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)

# --------------------------------------------------------------------------------------------
# libc and syscall numbers

_SYSCALL_NRS = {
    # machine: (bpf, perf_event_open)
    "x86_64": (321, 298),
    "aarch64": (280, 241),
    "arm64": (280, 241),
}

_libc: Optional[ctypes.CDLL] = None
_nrs: Optional[tuple[int, int]] = None


def libc() -> ctypes.CDLL:
    """The process's libc (opened on first use so importing stays free), with errno kept."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.ioctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def _syscall_nrs() -> tuple[int, int]:
    global _nrs
    if _nrs is None:
        machine = os.uname().machine
        try:
            _nrs = _SYSCALL_NRS[machine]
        except KeyError:
            raise PyBPFError(f"unsupported architecture {machine!r} (x86_64, aarch64)") from None
    return _nrs


def _error(what: str, err: int) -> BPFSyscallError:
    return BPFSyscallError(error_message(what, err), err)


ENOTSUPP = 524  # kernel-internal "not supported", leaks to user space from BPF code


def _errname(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, str(err))


def _strerror(err: int) -> str:
    return "Operation not supported" if err == ENOTSUPP else os.strerror(err)


def unprivileged_bpf_disabled() -> int:
    """kernel.unprivileged_bpf_disabled (4.4): 0 allowed, 1 or 2 disabled; -1 unknown."""
    try:
        with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return -1


def error_message(what: str, err: int) -> str:
    """``BPF_PROG_LOAD: Permission denied (EPERM)``, with a hint for the usual causes."""
    msg = f"{what}: {_strerror(err)} ({_errname(err)})"
    if err == _errno.EPERM:
        if os.geteuid() == 0:
            msg += (
                "; already root, so the kernel refuses it for another reason: a feature it "
                "lacks, lockdown (/sys/kernel/security/lockdown) or a security module"
            )
        else:
            msg += "; run as root, or with CAP_BPF and CAP_PERFMON (Linux 5.8+)"
            if unprivileged_bpf_disabled() > 0:
                msg += " (kernel.unprivileged_bpf_disabled is set: no bpf() without privileges)"
    elif err == _errno.E2BIG and what.startswith("BPF_"):
        msg += "; this kernel does not know an attribute pybpf set (too old for the feature?)"
    elif err in (_errno.EOPNOTSUPP, ENOTSUPP) and what.startswith("BPF_"):
        msg += "; this kernel does not support it"
    elif err == _errno.ENOMEM and what.startswith("BPF_"):
        msg += "; kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (ulimit -l)"
    return msg


# --------------------------------------------------------------------------------------------
# FD


_C = TypeVar("_C", bound="Closing")


class Closing:
    """Owner of kernel resources: ``close()`` is idempotent, runs on leaving a ``with``
    block, and on garbage collection as a last resort (fds are what keep programs,
    links and maps alive in the kernel)."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, fd already gone: nothing useful to do
            pass


class FD(Closing):
    """Owns one file descriptor: closed once, by :meth:`close`, the context manager or GC.

    BPF objects live as long as some fd (or pin, or link) refers to them, so ownership must be
    explicit: closing a program's FD unloads it unless something else holds it.
    """

    __slots__ = ("_fd", "__weakref__")

    def __init__(self, fd: int) -> None:
        self._fd = int(fd)

    def fileno(self) -> int:
        if self._fd < 0:
            raise PyBPFError("file descriptor is closed")
        return self._fd

    def __int__(self) -> int:
        return self.fileno()

    __index__ = __int__

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give up ownership and return the raw fd (the caller must close it)."""
        fd, self._fd = self._fd, -1
        return fd

    def __repr__(self) -> str:
        return f"FD({self._fd})" if self._fd >= 0 else "FD(closed)"


class _Record:
    """A plain value object.

    Not a dataclass: creating one costs ~1.5 ms at import (it exec()s an __init__), and the
    CLI must start fast.
    """

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name) if name in fields else self._defaults[name])
        if fields:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(fields)}")

    def _astuple(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._astuple() == other._astuple()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({body})"


# --------------------------------------------------------------------------------------------
# union bpf_attr pieces

_u8 = ctypes.c_uint8
_u16 = ctypes.c_uint16
_u32 = ctypes.c_uint32
_s32 = ctypes.c_int32
_u64 = ctypes.c_uint64


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1, 2.6.33)."""

    _fields_ = [
        ("type", _u32),
        ("size", _u32),
        ("config", _u64),
        ("sample_period", _u64),  # union with sample_freq
        ("sample_type", _u64),
        ("read_format", _u64),
        ("flags", _u64),  # bitfield: disabled:1, inherit:1, pinned:1, ...
        ("wakeup_events", _u32),  # union with wakeup_watermark
        ("bp_type", _u32),
        ("config1", _u64),
        ("config2", _u64),
    ]


# --------------------------------------------------------------------------------------------
# the syscalls

_field_ends_cache: dict[type, list[int]] = {}


def _field_ends(cls: type) -> list[int]:
    ends = _field_ends_cache.get(cls)
    if ends is None:
        ends = sorted({getattr(cls, f[0]).offset + getattr(cls, f[0]).size for f in cls._fields_})
        _field_ends_cache[cls] = ends
    return ends


def attr_size(attr: ctypes.Structure, min_size: int = 0) -> int:
    """Bytes of ``attr`` to pass: up to the end of the last field holding a non-zero byte.

    Kernels reject a non-zero byte past the attributes they know (E2BIG) but accept a short
    attr, so a call that leaves newer fields zero works on older kernels.  ``min_size`` covers
    output fields the kernel writes only when the size includes them (``log_true_size``).
    """
    raw = ctypes.string_at(ctypes.addressof(attr), ctypes.sizeof(attr))
    used = max(len(raw.rstrip(b"\0")), min_size)
    for end in _field_ends(type(attr)):
        if end >= used:
            return end
    return ctypes.sizeof(attr)


def bpf(cmd: int, attr: ctypes.Structure, size: Optional[int] = None) -> int:
    """Call bpf(2); return its result or raise BPFSyscallError naming the command."""
    ret = _bpf_raw(cmd, attr, attr_size(attr) if size is None else size)
    if ret < 0:
        raise _error(_CMD_NAMES.get(cmd, f"bpf cmd {cmd}"), -ret)
    return ret


class Kernel:
    """The three system calls everything here goes through, each returning ``-errno`` on
    failure.  This is the real kernel; tests put a scripted one in its place
    (:func:`use_kernel`) to drive the fallback paths that the running kernel never takes."""

    def bpf(self, cmd: int, attr: ctypes.Structure, size: int) -> int:
        ret = libc().syscall(
            ctypes.c_long(_syscall_nrs()[0]), ctypes.c_long(cmd), ctypes.byref(attr),
            ctypes.c_long(size),
        )  # fmt: skip
        return -ctypes.get_errno() if ret < 0 else ret

    def perf_event_open(
        self, attr: PerfEventAttr, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        ret = libc().syscall(
            ctypes.c_long(_syscall_nrs()[1]), ctypes.byref(attr), ctypes.c_long(pid),
            ctypes.c_long(cpu), ctypes.c_long(group_fd), ctypes.c_ulong(flags),
        )  # fmt: skip
        return -ctypes.get_errno() if ret < 0 else ret

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        ret = libc().ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg))
        return -ctypes.get_errno() if ret < 0 else ret


_kernel: Kernel = Kernel()


def use_kernel(kernel: Kernel) -> Kernel:
    """Send every bpf/perf_event_open/ioctl call to ``kernel``; returns the previous one."""
    global _kernel
    previous, _kernel = _kernel, kernel
    return previous


def _bpf_raw(cmd: int, attr: ctypes.Structure, size: int) -> int:
    """bpf(2) returning ``-errno`` on failure instead of raising (for retry loops)."""
    return _kernel.bpf(cmd, attr, size)


def perf_event_open(
    attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1, flags: int = 0
) -> FD:
    """perf_event_open(2); ``attr.size`` is filled in when left zero."""
    if not attr.size:
        attr.size = ctypes.sizeof(attr)
    ret = _kernel.perf_event_open(attr, pid, cpu, group_fd, flags)
    if ret < 0:
        raise _error(f"perf_event_open(cpu={cpu})", -ret)
    return FD(ret)


def ioctl(fd: int, request: int, arg: int = 0) -> int:
    """ioctl(2) with an integer argument (PERF_EVENT_IOC_ENABLE and friends)."""
    ret = _kernel.ioctl(int(fd), request, arg)
    if ret < 0:
        raise _error(f"ioctl({request:#x})", -ret)
    return ret


def _addr(buf: Optional[ctypes.Array]) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _in_buf(data: Optional[bytes]) -> Optional[ctypes.Array]:
    """A ctypes copy of ``data`` whose address can go into an attr (None for empty)."""
    if not data:
        return None
    return (ctypes.c_char * len(data)).from_buffer_copy(data)


def _obj_name(name: str) -> bytes:
    """Object names: at most 15 chars of [A-Za-z0-9_.] (the kernel rejects others, EINVAL)."""
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in name)
    return out[: BPF_OBJ_NAME_LEN - 1].encode()


# --------------------------------------------------------------------------------------------
# maps


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    map_flags: int = 0,
    name: str = "",
    *,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    inner_map_fd: int = 0,
    numa_node: int = 0,
    map_extra: int = 0,
) -> FD:
    """BPF_MAP_CREATE; ``name`` is truncated to 15 characters (names need 4.15)."""
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=map_flags,
        inner_map_fd=inner_map_fd,
        numa_node=numa_node,
        map_name=_obj_name(name),
        btf_fd=btf_fd,
        btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id,
        map_extra=map_extra,
    )
    return FD(bpf(BPF_MAP_CREATE, attr))


def map_lookup_elem(map_fd: int, key: bytes, value_size: int, flags: int = 0) -> Optional[bytes]:
    """BPF_MAP_LOOKUP_ELEM; None when the key is absent (ENOENT)."""
    kbuf = _in_buf(key)
    vbuf = ctypes.create_string_buffer(value_size)
    attr = MapElemAttr(map_fd=map_fd, key=_addr(kbuf), value=_addr(vbuf), flags=flags)
    ret = _bpf_raw(BPF_MAP_LOOKUP_ELEM, attr, ctypes.sizeof(attr))
    if ret < 0:
        if ret == -_errno.ENOENT:
            return None
        raise _error("BPF_MAP_LOOKUP_ELEM", -ret)
    return vbuf.raw


def map_update_elem(map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM (flags BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK)."""
    kbuf = _in_buf(key)
    vbuf = _in_buf(value)
    attr = MapElemAttr(map_fd=map_fd, key=_addr(kbuf), value=_addr(vbuf), flags=flags)
    bpf(BPF_MAP_UPDATE_ELEM, attr, ctypes.sizeof(attr))


def map_delete_elem(map_fd: int, key: bytes) -> bool:
    """BPF_MAP_DELETE_ELEM; False when the key was absent (ENOENT)."""
    kbuf = _in_buf(key)
    attr = MapElemAttr(map_fd=map_fd, key=_addr(kbuf))
    ret = _bpf_raw(BPF_MAP_DELETE_ELEM, attr, ctypes.sizeof(attr))
    if ret < 0:
        if ret == -_errno.ENOENT:
            return False
        raise _error("BPF_MAP_DELETE_ELEM", -ret)
    return True


def map_get_next_key(map_fd: int, key: Optional[bytes], key_size: int) -> Optional[bytes]:
    """BPF_MAP_GET_NEXT_KEY; ``key=None`` asks for the first key; None at the end (ENOENT)."""
    kbuf = _in_buf(key)
    nbuf = ctypes.create_string_buffer(key_size)
    attr = MapElemAttr(map_fd=map_fd, key=_addr(kbuf), value=_addr(nbuf))
    ret = _bpf_raw(BPF_MAP_GET_NEXT_KEY, attr, ctypes.sizeof(attr))
    if ret < 0:
        if ret == -_errno.ENOENT:
            return None
        raise _error("BPF_MAP_GET_NEXT_KEY", -ret)
    return nbuf.raw


def map_freeze(map_fd: int) -> None:
    """BPF_MAP_FREEZE (5.2): user space can no longer write the map (programs still can,
    unless the map also has BPF_F_RDONLY_PROG)."""
    bpf(BPF_MAP_FREEZE, MapElemAttr(map_fd=map_fd), 4)


def _batch(
    cmd: int, map_fd: int, key_size: int, value_size: int, count: int,
    in_batch: Optional[bytes], elem_flags: int,
) -> tuple[bytes, bytes, int, Optional[bytes]]:  # fmt: skip
    # The batch token is opaque: a u32 bucket for hash maps, a key for arrays.
    token = max(key_size, 8)
    inb = _in_buf(in_batch)
    outb = ctypes.create_string_buffer(token)
    keys = ctypes.create_string_buffer(max(1, key_size * count))
    values = ctypes.create_string_buffer(max(1, value_size * count))
    attr = MapBatchAttr(
        in_batch=_addr(inb), out_batch=_addr(outb), keys=_addr(keys), values=_addr(values),
        count=count, map_fd=map_fd, elem_flags=elem_flags,
    )  # fmt: skip
    ret = _bpf_raw(cmd, attr, ctypes.sizeof(attr))
    if ret < 0 and ret != -_errno.ENOENT:
        raise _error(_CMD_NAMES[cmd], -ret)
    n = attr.count
    done = ret == -_errno.ENOENT
    return keys.raw[: n * key_size], values.raw[: n * value_size], n, None if done else outb.raw


def map_lookup_batch(
    map_fd: int, key_size: int, value_size: int, count: int,
    in_batch: Optional[bytes] = None, elem_flags: int = 0,
) -> tuple[bytes, bytes, int, Optional[bytes]]:  # fmt: skip
    """BPF_MAP_LOOKUP_BATCH (5.6): up to ``count`` elements after ``in_batch`` (None: from
    the start).  Returns ``(keys, values, n, next_batch)``; ``next_batch`` is None at the end.
    ``value_size`` is the user-space value size (all CPUs' slots for per-CPU maps)."""
    return _batch(BPF_MAP_LOOKUP_BATCH, map_fd, key_size, value_size, count, in_batch,
                  elem_flags)  # fmt: skip


def map_lookup_and_delete_batch(
    map_fd: int, key_size: int, value_size: int, count: int,
    in_batch: Optional[bytes] = None, elem_flags: int = 0,
) -> tuple[bytes, bytes, int, Optional[bytes]]:  # fmt: skip
    """BPF_MAP_LOOKUP_AND_DELETE_BATCH (5.6; hash maps): read and remove."""
    return _batch(BPF_MAP_LOOKUP_AND_DELETE_BATCH, map_fd, key_size, value_size, count,
                  in_batch, elem_flags)  # fmt: skip


def map_update_batch(
    map_fd: int, keys: bytes, values: bytes, count: int, elem_flags: int = 0
) -> int:
    """BPF_MAP_UPDATE_BATCH (5.6): ``count`` packed keys and values; returns how many."""
    kbuf, vbuf = _in_buf(keys), _in_buf(values)
    attr = MapBatchAttr(
        keys=_addr(kbuf), values=_addr(vbuf), count=count, map_fd=map_fd, elem_flags=elem_flags
    )
    bpf(BPF_MAP_UPDATE_BATCH, attr, ctypes.sizeof(attr))
    return attr.count


def map_delete_batch(map_fd: int, keys: bytes, count: int) -> int:
    """BPF_MAP_DELETE_BATCH (5.6): delete ``count`` packed keys; returns how many."""
    kbuf = _in_buf(keys)
    attr = MapBatchAttr(keys=_addr(kbuf), count=count, map_fd=map_fd)
    bpf(BPF_MAP_DELETE_BATCH, attr, ctypes.sizeof(attr))
    return attr.count


def obj_pin(fd: int, path: str) -> None:
    """BPF_OBJ_PIN (4.4): give a map, program or link a name in a bpffs mount; it then
    outlives every fd until the file is removed."""
    buf = _in_buf(os.fsencode(path) + b"\0")
    attr = ObjAttr(pathname=_addr(buf), bpf_fd=int(fd))
    try:
        bpf(BPF_OBJ_PIN, attr, 16)
    except BPFSyscallError as err:
        hint = ""
        if err.errno in (_errno.EPERM, _errno.EINVAL, _errno.ENOENT):
            hint = " (is a bpffs mounted there? mount -t bpf bpf /sys/fs/bpf)"
        raise BPFSyscallError(f"pin {path!r}: {err}{hint}", err.errno) from None


def obj_get(path: str, file_flags: int = 0) -> FD:
    """BPF_OBJ_GET (4.4): open a pinned object."""
    buf = _in_buf(os.fsencode(path) + b"\0")
    attr = ObjAttr(pathname=_addr(buf), file_flags=file_flags)
    try:
        return FD(bpf(BPF_OBJ_GET, attr, 16))
    except BPFSyscallError as err:
        raise BPFSyscallError(f"open pinned {path!r}: {err}", err.errno) from None


# --------------------------------------------------------------------------------------------
# programs and BTF


def _summary(log: str) -> str:
    """The line of a verifier log that says what went wrong (not the trailing statistics)."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line and not line.startswith(
            ("processed ", "verification time", "stack depth", "max_states_per_insn", "-- ")
        ):
            return line
    return ""


def _load_with_log(
    cmd: int,
    attr: ctypes.Structure,
    set_log: object,
    true_size_field: str,
    log_level: int,
    log_size: int,
) -> tuple[int, str]:
    """Run a load command, first without a log (fast), then with a growing log on failure.

    Returns ``(fd, log)``; raises VerifierError with the log, or BPFSyscallError if the kernel
    gave no log (bad attributes, missing privileges).
    """
    name = _CMD_NAMES[cmd]
    min_size = getattr(type(attr), true_size_field).offset + 4
    if log_level == 0:
        ret = _bpf_raw(cmd, attr, attr_size(attr))
        if ret >= 0:
            return ret, ""
        if ret == -_errno.EPERM:
            raise _error(name, _errno.EPERM)
        log_level = BPF_LOG_LEVEL1
    size = max(log_size, 128)
    while True:
        buf = ctypes.create_string_buffer(size)
        set_log(attr, log_level, buf, size)  # type: ignore[operator]
        ret = _bpf_raw(cmd, attr, attr_size(attr, min_size))
        log = buf.value.decode(errors="replace")
        if ret >= 0:
            return ret, log
        err = -ret
        if err == _errno.ENOSPC and size < LOG_BUF_SIZE_MAX:
            # 6.4+ reports the size it needed; older kernels: keep doubling.
            needed = getattr(attr, true_size_field)
            bigger = min(max(size * 2, needed + 1), LOG_BUF_SIZE_MAX)
            if bigger > size:
                size = bigger
                continue
        break
    msg = error_message(name, err)
    if not log.strip():
        raise BPFSyscallError(msg, err)
    summary = _summary(log)
    if summary:
        msg += f": {summary}"
    raise VerifierError(msg, err, log)


def _set_prog_log(attr: ProgLoadAttr, level: int, buf: ctypes.Array, size: int) -> None:
    attr.log_level = level
    attr.log_buf = ctypes.addressof(buf)
    attr.log_size = size
    attr.log_true_size = 0


def _set_btf_log(attr: BTFLoadAttr, level: int, buf: ctypes.Array, size: int) -> None:
    attr.btf_log_level = level
    attr.btf_log_buf = ctypes.addressof(buf)
    attr.btf_log_size = size
    attr.btf_log_true_size = 0


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", **options: Any) -> FD:
    """BPF_PROG_LOAD; takes the options of :func:`prog_load_log`, returns just the fd.

    With ``log_level=0`` the program is loaded without a log (fast path); on failure it is
    loaded again with ``log_level=1`` so the VerifierError carries the verifier's log.
    """
    return prog_load_log(prog_type, insns, license, **options)[0]


def prog_load_log(
    prog_type: int,
    insns: bytes,
    license: str = "GPL",
    *,
    name: str = "",
    expected_attach_type: int = 0,
    prog_flags: int = 0,
    kern_version: int = 0,
    prog_btf_fd: int = 0,
    func_info: bytes = b"",
    func_info_rec_size: int = 8,
    line_info: bytes = b"",
    line_info_rec_size: int = 16,
    attach_btf_id: int = 0,
    attach_prog_fd: int = 0,
    attach_btf_obj_fd: int = 0,
    fd_array: Optional[Sequence[int]] = None,
    core_relos: bytes = b"",
    core_relo_rec_size: int = 16,
    log_level: int = 0,
    log_size: int = LOG_BUF_SIZE,
) -> tuple[FD, str]:
    """BPF_PROG_LOAD returning ``(fd, log)``; the log is empty when ``log_level == 0``.

    ``core_relos`` (records of ``struct bpf_core_relo``) make the kernel itself apply CO-RE
    relocations (5.17); they need ``prog_btf_fd`` and ``func_info``.  Record sizes are the
    kernel's: bpf_func_info 8, bpf_line_info 16, bpf_core_relo 16.
    """
    if len(insns) % 8:
        raise PyBPFError(f"instruction bytes must be a multiple of 8, got {len(insns)}")
    if attach_prog_fd and attach_btf_obj_fd:
        raise PyBPFError("attach_prog_fd and attach_btf_obj_fd share a field: give one")
    keep = []  # buffers whose addresses are in attr

    def ptr(data: Optional[bytes]) -> int:
        buf = _in_buf(data)
        keep.append(buf)
        return _addr(buf)

    lic = license.encode() + b"\0"
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ptr(insns),
        license=ptr(lic),
        kern_version=kern_version,
        prog_flags=prog_flags,
        prog_name=_obj_name(name),
        expected_attach_type=expected_attach_type,
        prog_btf_fd=prog_btf_fd,
        attach_btf_id=attach_btf_id,
        attach_prog_fd=attach_prog_fd or attach_btf_obj_fd,
    )
    if func_info:
        attr.func_info_rec_size = func_info_rec_size
        attr.func_info = ptr(func_info)
        attr.func_info_cnt = len(func_info) // func_info_rec_size
    if line_info:
        attr.line_info_rec_size = line_info_rec_size
        attr.line_info = ptr(line_info)
        attr.line_info_cnt = len(line_info) // line_info_rec_size
    if core_relos:
        attr.core_relo_rec_size = core_relo_rec_size
        attr.core_relos = ptr(core_relos)
        attr.core_relo_cnt = len(core_relos) // core_relo_rec_size
    if fd_array:
        arr = (ctypes.c_int32 * len(fd_array))(*[int(f) for f in fd_array])
        keep.append(arr)
        attr.fd_array = ctypes.addressof(arr)
    fd, log = _load_with_log(
        BPF_PROG_LOAD, attr, _set_prog_log, "log_true_size", log_level, log_size
    )
    return FD(fd), log


def btf_load(btf: bytes, *, log_level: int = 0, log_size: int = LOG_BUF_SIZE) -> FD:
    """BPF_BTF_LOAD (4.18); on failure retried with a log, raised as VerifierError."""
    return btf_load_log(btf, log_level=log_level, log_size=log_size)[0]


def btf_load_log(btf: bytes, *, log_level: int = 0, log_size: int = LOG_BUF_SIZE) -> tuple[FD, str]:
    """BPF_BTF_LOAD returning ``(fd, log)``."""
    buf = _in_buf(btf)
    attr = BTFLoadAttr(btf=_addr(buf), btf_size=len(btf))
    fd, log = _load_with_log(
        BPF_BTF_LOAD, attr, _set_btf_log, "btf_log_true_size", log_level, log_size
    )
    return FD(fd), log


# --------------------------------------------------------------------------------------------
# attaching


def link_create(
    prog_fd: int,
    target_fd: int = 0,
    attach_type: int = 0,
    flags: int = 0,
    *,
    target_btf_id: int = 0,
    cookie: int = 0,
) -> FD:
    """BPF_LINK_CREATE (5.7; tracing/tp_btf programs 5.10, tracing ``cookie`` 5.19)."""
    attr = LinkCreateAttr(
        prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags
    )
    if target_btf_id or cookie:
        attr.tracing.target_btf_id = target_btf_id
        attr.tracing.cookie = cookie
    return FD(bpf(BPF_LINK_CREATE, attr))


def raw_tracepoint_open(prog_fd: int, name: Optional[str] = None) -> FD:
    """BPF_RAW_TRACEPOINT_OPEN (4.17): ``name`` for raw_tp, None for tp_btf/fentry (5.5)."""
    buf = _in_buf(name.encode() + b"\0") if name is not None else None
    attr = RawTracepointAttr(name=_addr(buf), prog_fd=prog_fd)
    return FD(bpf(BPF_RAW_TRACEPOINT_OPEN, attr))


# --------------------------------------------------------------------------------------------
# test runs, stats


class TestRunResult(_Record):
    """What BPF_PROG_TEST_RUN reports: the program's return value and mean run time."""

    __test__ = False  # not a pytest class
    __slots__ = ("retval", "duration_ns", "data_out", "ctx_out")
    retval: int
    duration_ns: int
    data_out: bytes
    ctx_out: bytes


def prog_test_run(
    prog_fd: int,
    data_in: bytes = b"",
    ctx_in: bytes = b"",
    *,
    repeat: int = 0,
    data_out_size: int = 0,
    ctx_out_size: int = 0,
    flags: int = 0,
    cpu: int = 0,
) -> TestRunResult:
    """BPF_PROG_TEST_RUN (4.12). Which fields are allowed depends on the program type:
    skb programs need ``data_in`` of at least 14 bytes; raw_tp (5.10) takes only ``ctx_in``
    and ``flags``/``cpu`` (``repeat`` must stay 0)."""
    dbuf, cbuf = _in_buf(data_in), _in_buf(ctx_in)
    dout = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    cout = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
    attr = TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data_in),
        data_size_out=data_out_size,
        data_in=_addr(dbuf),
        data_out=_addr(dout),
        repeat=repeat,
        ctx_size_in=len(ctx_in),
        ctx_size_out=ctx_out_size,
        ctx_in=_addr(cbuf),
        ctx_out=_addr(cout),
        flags=flags,
        cpu=cpu,
    )
    bpf(BPF_PROG_TEST_RUN, attr)
    return TestRunResult(
        retval=attr.retval,
        duration_ns=attr.duration,
        data_out=dout.raw[: attr.data_size_out] if dout is not None else b"",
        ctx_out=cout.raw[: attr.ctx_size_out] if cout is not None else b"",
    )


def enable_stats(stats_type: int = BPF_STATS_RUN_TIME) -> FD:
    """BPF_ENABLE_STATS (5.8): run_time_ns/run_cnt are counted while the returned FD is open."""
    return FD(bpf(BPF_ENABLE_STATS, EnableStatsAttr(type=stats_type), 4))


# --------------------------------------------------------------------------------------------
# ids and info


def _get_next_id(cmd: int, start_id: int) -> Optional[int]:
    attr = GetIdAttr(start_id=start_id)
    ret = _bpf_raw(cmd, attr, ctypes.sizeof(attr))
    if ret < 0:
        if ret == -_errno.ENOENT:
            return None
        raise _error(_CMD_NAMES[cmd], -ret)
    return attr.next_id


def _iter_ids(cmd: int) -> Iterator[int]:
    next_id = _get_next_id(cmd, 0)
    while next_id is not None:
        yield next_id
        next_id = _get_next_id(cmd, next_id)


def iter_prog_ids() -> Iterator[int]:
    """Ids of loaded programs, ascending (BPF_PROG_GET_NEXT_ID, 4.13)."""
    return _iter_ids(BPF_PROG_GET_NEXT_ID)


def iter_map_ids() -> Iterator[int]:
    """Ids of existing maps (BPF_MAP_GET_NEXT_ID, 4.13)."""
    return _iter_ids(BPF_MAP_GET_NEXT_ID)


def iter_link_ids() -> Iterator[int]:
    """Ids of existing links (BPF_LINK_GET_NEXT_ID, 5.8)."""
    return _iter_ids(BPF_LINK_GET_NEXT_ID)


def iter_btf_ids() -> Iterator[int]:
    """Ids of loaded BTF objects, vmlinux included (BPF_BTF_GET_NEXT_ID, 5.4)."""
    return _iter_ids(BPF_BTF_GET_NEXT_ID)


def _fd_by_id(cmd: int, obj_id: int) -> FD:
    return FD(bpf(cmd, GetIdAttr(start_id=obj_id), ctypes.sizeof(GetIdAttr)))


def prog_get_fd_by_id(prog_id: int) -> FD:
    """BPF_PROG_GET_FD_BY_ID (4.13)."""
    return _fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id)


def map_get_fd_by_id(map_id: int) -> FD:
    """BPF_MAP_GET_FD_BY_ID (4.13)."""
    return _fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)


def link_get_fd_by_id(link_id: int) -> FD:
    """BPF_LINK_GET_FD_BY_ID (5.8)."""
    return _fd_by_id(BPF_LINK_GET_FD_BY_ID, link_id)


def btf_get_fd_by_id(btf_id: int) -> FD:
    """BPF_BTF_GET_FD_BY_ID (4.18)."""
    return _fd_by_id(BPF_BTF_GET_FD_BY_ID, btf_id)


def obj_get_info_by_fd(fd: int, info: ctypes.Structure) -> int:
    """BPF_OBJ_GET_INFO_BY_FD (4.13): fill ``info`` in place; return the length the kernel
    wrote (shorter than ``sizeof(info)`` on older kernels)."""
    attr = InfoAttr(bpf_fd=int(fd), info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr))
    return attr.info_len


def _name(raw: bytes) -> str:
    return raw.decode(errors="replace")


class ProgInfo(_Record):
    """The parts of struct bpf_prog_info tools show (bpftool prog show)."""

    __slots__ = (
        "id", "type", "name", "tag", "map_ids", "run_time_ns", "run_cnt", "load_time",
        "created_by_uid", "jited_prog_len", "xlated_prog_len", "verified_insns", "btf_id",
        "gpl_compatible", "recursion_misses", "attach_btf_obj_id", "attach_btf_id",
        "xlated_insns",
    )  # fmt: skip
    _defaults = {"xlated_insns": None}

    id: int
    type: int
    name: str
    tag: str  # hex, as bpftool prints it
    map_ids: list[int]
    run_time_ns: int  # counted only while stats are enabled (enable_stats, 5.8)
    run_cnt: int
    load_time: int  # ns since boot
    created_by_uid: int
    jited_prog_len: int
    xlated_prog_len: int
    verified_insns: int
    btf_id: int
    gpl_compatible: bool
    recursion_misses: int
    attach_btf_obj_id: int
    attach_btf_id: int
    xlated_insns: Optional[bytes]


def prog_info(fd: int, *, xlated: bool = False) -> ProgInfo:
    """Information about a loaded program; ``xlated=True`` also fetches the instructions as
    the verifier rewrote them (needs CAP_SYS_ADMIN-level access, else empty)."""
    info = BPFProgInfo()
    obj_get_info_by_fd(fd, info)
    keep = []
    if info.nr_map_ids or (xlated and info.xlated_prog_len):
        nr, xlen = info.nr_map_ids, info.xlated_prog_len if xlated else 0
        info = BPFProgInfo()
        if nr:
            ids = (_u32 * nr)()
            keep.append(ids)
            info.nr_map_ids, info.map_ids = nr, ctypes.addressof(ids)
        if xlen:
            insns = ctypes.create_string_buffer(xlen)
            keep.append(insns)
            info.xlated_prog_len, info.xlated_prog_insns = xlen, ctypes.addressof(insns)
        obj_get_info_by_fd(fd, info)
    map_ids: list[int] = []
    xl: Optional[bytes] = None
    for buf in keep:
        if isinstance(buf, ctypes.Array) and buf._type_ is _u32:
            map_ids = list(buf)[: info.nr_map_ids]
        else:
            xl = buf.raw[: info.xlated_prog_len]
    return ProgInfo(
        id=info.id,
        type=info.type,
        name=_name(info.name),
        tag=bytes(info.tag).hex(),
        map_ids=map_ids,
        run_time_ns=info.run_time_ns,
        run_cnt=info.run_cnt,
        load_time=info.load_time,
        created_by_uid=info.created_by_uid,
        jited_prog_len=info.jited_prog_len,
        xlated_prog_len=info.xlated_prog_len,
        verified_insns=info.verified_insns,
        btf_id=info.btf_id,
        gpl_compatible=bool(info.gpl_compatible & 1),
        recursion_misses=info.recursion_misses,
        attach_btf_obj_id=info.attach_btf_obj_id,
        attach_btf_id=info.attach_btf_id,
        xlated_insns=xl if xlated else None,
    )


class MapInfo(_Record):
    """The parts of struct bpf_map_info tools show (bpftool map show)."""

    __slots__ = (
        "id", "type", "name", "key_size", "value_size", "max_entries", "map_flags", "btf_id",
        "btf_key_type_id", "btf_value_type_id", "map_extra",
    )  # fmt: skip

    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int


def map_info(fd: int) -> MapInfo:
    """Information about a map (type, sizes, flags, name, BTF ids)."""
    info = BPFMapInfo()
    obj_get_info_by_fd(fd, info)
    return MapInfo(
        id=info.id,
        type=info.type,
        name=_name(info.name),
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
        btf_id=info.btf_id,
        btf_key_type_id=info.btf_key_type_id,
        btf_value_type_id=info.btf_value_type_id,
        map_extra=info.map_extra,
    )


class LinkInfo(_Record):
    """Common struct bpf_link_info fields, plus the raw_tracepoint and tracing parts."""

    __slots__ = (
        "id", "type", "prog_id", "tp_name", "attach_type", "target_obj_id", "target_btf_id",
    )  # fmt: skip
    _defaults = {"tp_name": "", "attach_type": 0, "target_obj_id": 0, "target_btf_id": 0}

    id: int
    type: int
    prog_id: int
    tp_name: str  # BPF_LINK_TYPE_RAW_TRACEPOINT
    attach_type: int  # BPF_LINK_TYPE_TRACING
    target_obj_id: int
    target_btf_id: int


def link_info(fd: int) -> LinkInfo:
    """Information about a link (5.8)."""
    info = BPFLinkInfo()
    obj_get_info_by_fd(fd, info)
    out = LinkInfo(id=info.id, type=info.type, prog_id=info.prog_id)
    if info.type == BPF_LINK_TYPE_RAW_TRACEPOINT:
        n = info.raw_tracepoint.tp_name_len or 256
        buf = ctypes.create_string_buffer(n)
        info = BPFLinkInfo()
        info.raw_tracepoint.tp_name = ctypes.addressof(buf)
        info.raw_tracepoint.tp_name_len = n
        obj_get_info_by_fd(fd, info)
        out.tp_name = _name(buf.value)
    elif info.type == BPF_LINK_TYPE_TRACING:
        out.attach_type = info.tracing.attach_type
        out.target_obj_id = info.tracing.target_obj_id
        out.target_btf_id = info.tracing.target_btf_id
    return out


# --------------------------------------------------------------------------------------------
# host


def bump_memlock_rlimit() -> Optional[str]:
    """Lift RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps and programs to (the
    caller asks :func:`pybpf.probes.have_memcg_accounting` whether it is needed).

    Never raises: returns a warning when the limit could not be raised (no
    CAP_SYS_RESOURCE), else None.
    """
    import resource

    try:
        resource.setrlimit(
            resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
    except (OSError, ValueError) as exc:
        return (
            f"could not raise RLIMIT_MEMLOCK ({exc}); this kernel charges BPF maps and "
            "programs to it (before 5.11), so loads may fail with EPERM"
        )
    return None


def parse_cpu_list(text: str) -> list[int]:
    """Parse a sysfs CPU list such as ``"0-1,3"`` into ``[0, 1, 3]``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(lo))
    return cpus


def possible_cpus() -> list[int]:
    """CPUs the kernel may ever bring up: per-CPU maps hold one value slot for each."""
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())
