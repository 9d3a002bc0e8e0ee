"""Feature probes: ask the running kernel what it supports, once per process.

Each probe makes the smallest request that only a kernel with the feature accepts (as libbpf's
``features.c`` and cilium/ebpf's ``features`` do) rather than comparing version numbers:
distributions backport.  Results are cached per process; :func:`probe_all` reports them all.

A probe has three outcomes: supported (True), missing (False), or inconclusive: the kernel
refused to answer (EPERM, EACCES) a process without CAP_BPF/CAP_SYS_ADMIN, which says nothing
about the feature.  Inconclusive raises :class:`Inconclusive` (a :class:`PyBPFError` that says
what privilege is missing) and is not cached, so a later call with privileges asks again.
A fully privileged process that is refused gets False: the kernel does refuse the feature
(e.g. BPF trampolines on a kernel that forbids them).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import re
import struct
from typing import TYPE_CHECKING, Callable, Optional

from . import isa
from . import syscall as _sys
from .errors import BPFSyscallError, PyBPFError, VerifierError
from .uapi import (
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_RINGBUF,
    BPF_PROG_TYPE_KPROBE,
    BPF_PROG_TYPE_RAW_TRACEPOINT,
    BPF_PROG_TYPE_SOCKET_FILTER,
    BPF_PROG_TYPE_TRACEPOINT,
    BPF_PROG_TYPE_TRACING,
    BPF_TRACE_FENTRY,
    BPF_TRACE_RAW_TP,
)

if TYPE_CHECKING:
    from .btf import BTF

_cache: dict[str, bool] = {}
_PROBES: dict[str, tuple[str, Callable[[], bool]]] = {}

_EXIT0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit

_DENIED = (_errno.EPERM, _errno.EACCES)
CAP_SYS_ADMIN = 21
CAP_BPF = 39


class Inconclusive(PyBPFError):
    """The kernel would not answer a probe for lack of privilege: the feature may exist."""

    def __init__(self, feature: str, since: str, err: BPFSyscallError) -> None:
        super().__init__(f"cannot tell whether this kernel has {feature} (Linux {since}+): {err}")
        self.feature = feature
        self.since = since
        self.errno = err.errno


def privileged() -> bool:
    """CAP_SYS_ADMIN or CAP_BPF in the effective set: a refusal is then the kernel's word."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps & (1 << CAP_SYS_ADMIN | 1 << CAP_BPF))
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


class _Denied(Exception):
    """A probe's request was refused (EPERM/EACCES) to a process without privileges."""

    def __init__(self, err: BPFSyscallError) -> None:
        self.err = err


def _refused(err: BPFSyscallError) -> None:
    """Raise _Denied when ``err`` is a refusal that says nothing about the feature."""
    if err.errno in _DENIED and not privileged():
        raise _Denied(err)


def _answer(name: str, since: str, fn: Callable[[], bool]) -> bool:
    """Run a probe: cached True/False, or Inconclusive (not cached)."""
    if name not in _cache:
        try:
            _cache[name] = bool(fn())
        except _Denied as denied:
            raise Inconclusive(name, since, denied.err) from None
        except (PyBPFError, OSError):
            _cache[name] = False
    return _cache[name]


def _probe(name: str, since: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    def wrap(fn: Callable[[], bool]) -> Callable[[], bool]:
        def cached() -> bool:
            return _answer(name, since, fn)

        cached.__name__ = fn.__name__
        cached.__doc__ = fn.__doc__
        _PROBES[name] = (since, cached)
        return cached

    return wrap


def _map_ok(map_type: int, key: int, value: int, entries: int, flags: int = 0) -> bool:
    try:
        _sys.map_create(map_type, key, value, entries, flags).close()
    except BPFSyscallError as err:
        _refused(err)
        return False
    return True


def _load_errno(prog_type: int, **options: object) -> int:
    """0 if a trivial program of ``prog_type`` loads, else its errno."""
    try:
        _sys.prog_load(prog_type, _EXIT0, "GPL", **options).close()  # type: ignore[arg-type]
    except BPFSyscallError as err:
        _refused(err)
        return err.errno
    return 0


@_probe("kernel_btf", "5.4")
def have_kernel_btf() -> bool:
    """/sys/kernel/btf/vmlinux: the kernel's own BTF (CONFIG_DEBUG_INFO_BTF, 5.4)."""
    return os.path.exists("/sys/kernel/btf/vmlinux")


@_probe("map_name", "4.15")
def have_map_names() -> bool:
    """BPF_MAP_CREATE accepts map_name (4.15)."""
    try:
        _sys.map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, "probe").close()
    except BPFSyscallError as err:
        _refused(err)
        return False
    return True


@_probe("memcg_accounting", "5.11")
def have_memcg_accounting() -> bool:
    """BPF memory charged to the memory cgroup instead of RLIMIT_MEMLOCK (5.11).

    Asked directly: with a memlock soft limit of 0, only such a kernel still creates a map
    (before, the charge fails with EPERM even for root).  The limit is restored at once."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
    try:
        return _map_ok(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))


@_probe("ringbuf", "5.8")
def have_ringbuf() -> bool:
    """BPF_MAP_TYPE_RINGBUF (5.8): one ring shared by all CPUs, reserve/commit."""
    return _map_ok(BPF_MAP_TYPE_RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE"))


@_probe("batch_ops", "5.6")
def have_batch_ops() -> bool:
    """BPF_MAP_LOOKUP_BATCH and friends (5.6): many elements per syscall."""
    try:
        fd = _sys.map_create(BPF_MAP_TYPE_HASH, 4, 4, 4)
    except BPFSyscallError as err:
        _refused(err)
        raise
    with fd:
        try:
            _sys.map_lookup_batch(fd.fileno(), 4, 4, 4)
        except BPFSyscallError:
            return False
    return True


@_probe("raw_tp", "4.17")
def have_raw_tp() -> bool:
    """BPF_PROG_TYPE_RAW_TRACEPOINT (4.17)."""
    return _load_errno(BPF_PROG_TYPE_RAW_TRACEPOINT) == 0


@_probe("tracepoint", "4.7")
def have_tracepoint() -> bool:
    """BPF_PROG_TYPE_TRACEPOINT (4.7): perf tracepoints, attached through perf_event_open."""
    return _load_errno(BPF_PROG_TYPE_TRACEPOINT) == 0


@_probe("kprobe", "4.1")
def have_kprobe() -> bool:
    """BPF_PROG_TYPE_KPROBE (4.1)."""
    return _load_errno(BPF_PROG_TYPE_KPROBE) == 0


def have_tp_btf(btf: Optional[BTF] = None) -> bool:
    """BPF_PROG_TYPE_TRACING with BPF_TRACE_RAW_TP (5.5): a trivial program aimed at the
    kernel's ``btf_trace_sched_switch`` typedef loads.  (libbpf's generic TRACING probe, an
    fentry at BTF id 1, is refused with EPERM on some kernels that run tp_btf fine.)
    ``btf``: the running kernel's BTF if already parsed (else it is read)."""
    return _answer("tp_btf", "5.5", lambda: _tp_btf(btf))


def _tp_btf(btf: Optional[BTF]) -> bool:
    from .btf import BTF_KIND_TYPEDEF

    if btf is None:
        if not have_kernel_btf():
            return False
        from .btf import BTF

        btf = BTF.kernel()
    ids = btf.find("btf_trace_sched_switch", BTF_KIND_TYPEDEF)
    if not ids:
        return False
    return _load_errno(
        BPF_PROG_TYPE_TRACING, expected_attach_type=BPF_TRACE_RAW_TP, attach_btf_id=ids[0]
    ) == 0


_PROBES["tp_btf"] = ("5.5", have_tp_btf)


@_probe("fentry", "5.5")
def have_fentry() -> bool:
    """fentry programs (BPF trampolines, 5.5; need ftrace direct calls in the kernel): a
    trivial one aimed at ``bpf_fentry_test1`` (the kernel's own test target) loads."""
    from .btf import BTF, BTF_KIND_FUNC

    if not have_kernel_btf():
        return False
    ids = BTF.kernel().find("bpf_fentry_test1", BTF_KIND_FUNC)
    if not ids:
        return False
    return _load_errno(
        BPF_PROG_TYPE_TRACING, expected_attach_type=BPF_TRACE_FENTRY, attach_btf_id=ids[0]
    ) == 0


@_probe("link_create", "5.7")
def have_link_create() -> bool:
    """BPF_LINK_CREATE (5.7).  Probed with a bad prog fd: EBADF means the command exists."""
    try:
        _sys.link_create(0xFFFFFF, 0, 0)
    except BPFSyscallError as err:
        _refused(err)
        return err.errno == _errno.EBADF
    return True


@_probe("log_true_size", "6.4")
def have_log_true_size() -> bool:
    """BPF_PROG_LOAD reports the log size it needed in ``log_true_size`` (6.4)."""
    attr = _sys.ProgLoadAttr(prog_type=BPF_PROG_TYPE_RAW_TRACEPOINT, insn_cnt=2)
    insns = ctypes.create_string_buffer(_EXIT0, len(_EXIT0))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr.insns, attr.license = ctypes.addressof(insns), ctypes.addressof(lic)
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    size = _sys.ProgLoadAttr.log_true_size.offset + 4
    fd = _sys._bpf_raw(_sys.BPF_PROG_LOAD, attr, size)
    if fd < 0:
        _refused(BPFSyscallError(_sys.error_message("BPF_PROG_LOAD", -fd), -fd))
        return False
    os.close(fd)
    return attr.log_true_size > 0


# One small socket filter per ISA_FEATURES family.  The first ones load on a kernel that has
# the family; the last ones cannot load anywhere without more context (a kfunc, a subprogram,
# an fd_array, an arena), and there the verifier's words say whether it knows the encoding.
def _i(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> isa.Instruction:
    return isa.Instruction(code, dst, src, off, imm)


_MOV0, _EXIT, _ZERO_FP8 = _i(0xB7), _i(0x95), _i(0x7A, 10, 0, -8, 0)
_ISA_PROGRAMS: dict[str, tuple[bool, list[isa.Instruction]]] = {
    "jmp32": (True, [_MOV0, _i(0x16), _EXIT]),  # if w0 == 0 goto +0
    "atomics": (True, [_ZERO_FP8, _i(0xB7, 1, imm=1), _i(0xDB, 10, 1, -8, isa.BPF_FETCH),
                       _MOV0, _EXIT]),  # r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
    "v4": (True, [_MOV0, _i(0xBF, 0, 0, 8), _EXIT]),  # r0 = (s8)r0
    "may_goto": (True, [_MOV0, _i(0xE5, off=1), _MOV0, _EXIT]),
    "load_acquire": (True, [_ZERO_FP8, _i(0xDB, 0, 10, -8, isa.BPF_LOAD_ACQ), _MOV0, _EXIT]),
    "kfunc_call": (False, [_MOV0, _i(0x85, 0, isa.BPF_PSEUDO_KFUNC_CALL, 0, 1), _EXIT]),
    "ld_imm64_func": (False, [_i(isa.LD_IMM64, 1, isa.BPF_PSEUDO_FUNC, 0, 1), _MOV0, _EXIT]),
    "ld_imm64_idx": (False, [_i(isa.LD_IMM64, 1, isa.BPF_PSEUDO_MAP_IDX), _MOV0, _EXIT]),
    "addr_space_cast": (False, [_MOV0, _i(0xBF, 0, 0, isa.BPF_ADDR_SPACE_CAST, 1), _EXIT]),
}  # fmt: skip
# How verifiers of every version say that they do not know an encoding.
_UNKNOWN_ENCODING = re.compile(
    r"unknown opcode|uses reserved fields|unrecognized bpf_ld_imm64|invalid bpf_ld_imm64"
    r"|invalid atomic opcode|BPF_ATOMIC uses invalid|invalid may_goto"
)


def have_insn(feature: str) -> bool:
    """Whether the verifier accepts the :data:`pybpf.isa.ISA_FEATURES` family ``feature``
    (cached per process).  ``required_feature(insn)`` names an instruction's family."""
    key = f"insn_{feature}"
    if key not in _cache:
        try:
            _cache[key] = _insn_probe(feature)
        except (PyBPFError, OSError):
            _cache[key] = False
    return _cache[key]


def _insn_probe(feature: str) -> bool:
    must_load, prog = _ISA_PROGRAMS[feature]
    try:
        _sys.prog_load(BPF_PROG_TYPE_SOCKET_FILTER, isa.encode(prog), "GPL").close()
    except VerifierError as err:
        return not must_load and not _UNKNOWN_ENCODING.search(err.log or str(err))
    except BPFSyscallError:
        return False
    return True


for _name, _since in isa.ISA_FEATURES.items():
    _PROBES[f"insn_{_name}"] = (_since, lambda _n=_name: have_insn(_n))


def _btf_blob(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def _btf_ok(types: bytes, strings: bytes) -> bool:
    try:
        _sys.btf_load(_btf_blob(types, strings)).close()
    except BPFSyscallError as err:
        _refused(err)
        return False
    return True


def _info(kind: int, vlen: int = 0, kflag: int = 0) -> int:
    return (kflag << 31) | (kind << 24) | vlen


@_probe("btf", "4.18")
def have_btf() -> bool:
    """BPF_BTF_LOAD with an INT (4.18)."""
    return _btf_ok(struct.pack("<IIII", 1, _info(1), 4, 32), b"\0int\0")


@_probe("btf_func", "5.0")
def have_btf_func() -> bool:
    """BTF_KIND_FUNC and FUNC_PROTO (5.0): what func_info needs."""
    types = struct.pack("<III", 0, _info(13), 0) + struct.pack("<III", 1, _info(12), 1)
    return _btf_ok(types, b"\0f\0")


@_probe("btf_float", "5.13")
def have_btf_float() -> bool:
    """BTF_KIND_FLOAT (5.13)."""
    return _btf_ok(struct.pack("<III", 1, _info(16), 4), b"\0float\0")


@_probe("btf_decl_tag", "5.16")
def have_btf_decl_tag() -> bool:
    """BTF_KIND_DECL_TAG (5.16), here on a typedef."""
    types = (
        struct.pack("<IIII", 1, _info(1), 4, 32)  # [1] int
        + struct.pack("<III", 5, _info(8), 1)  # [2] typedef t int
        + struct.pack("<IIIi", 7, _info(17), 2, -1)  # [3] decl_tag "tag" -> [2]
    )
    return _btf_ok(types, b"\0int\0t\0tag\0")


@_probe("btf_type_tag", "5.17")
def have_btf_type_tag() -> bool:
    """BTF_KIND_TYPE_TAG (5.17)."""
    types = (
        struct.pack("<IIII", 1, _info(1), 4, 32)
        + struct.pack("<III", 5, _info(18), 1)
        + struct.pack("<III", 0, _info(2), 2)
    )
    return _btf_ok(types, b"\0int\0tag\0")


@_probe("btf_enum64", "6.0")
def have_btf_enum64() -> bool:
    """BTF_KIND_ENUM64 (6.0)."""
    types = struct.pack("<III", 1, _info(19, 1), 8) + struct.pack("<III", 3, 1, 0)
    return _btf_ok(types, b"\0e\0v\0")


def probe_all() -> dict[str, Optional[bool]]:
    """Every probe's result, by name: True, False, or None when inconclusive."""
    out: dict[str, Optional[bool]] = {}
    for name, (_since, fn) in _PROBES.items():
        try:
            out[name] = fn()
        except Inconclusive:
            out[name] = None
    return out


def probe_versions() -> dict[str, str]:
    """The kernel version that introduced each probed feature."""
    return {name: since for name, (since, _fn) in _PROBES.items()}


def reset_cache() -> None:
    """Forget cached answers (tests)."""
    _cache.clear()
