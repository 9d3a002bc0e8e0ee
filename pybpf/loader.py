"""Load a prepared object into the kernel: maps, programs, links; tear it down.

The life cycle of a libbpf skeleton: ``load()`` creates the maps, fills and
freezes ``.rodata``, patches map fds into ``LD_IMM64`` instructions and calls
``BPF_PROG_LOAD``; ``attach()`` creates the links; ``close()`` (or leaving the
``with`` block) closes every fd, which is what makes the kernel free programs,
links and maps: nothing is pinned, so nothing survives the process.
"""

from __future__ import annotations

import errno as _errno
import re
from typing import Optional, Union

from . import isa
from .core import POISON_IMM
from .errors import BPFSyscallError, PyBPFError, VerifierError
from .maps import Map
from .object import (
    Globals,
    KernelCoreRequest,
    MapSpec,
    PreparedObject,
    PreparedProgram,
    program_btf,
)
from .syscall import (
    ENOTSUPP,
    FD,
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_SET_BPF,
    PERF_FLAG_FD_CLOEXEC,
    PERF_TYPE_TRACEPOINT,
    PerfEventAttr,
    btf_load,
    bump_memlock_rlimit,
    ioctl,
    link_create,
    perf_event_open,
    possible_cpus,
    prog_load,
    prog_load_log,
    raw_tracepoint_open,
)
from .uapi import (
    BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    BPF_MAP_TYPE_PROG_ARRAY,
    BPF_PERF_EVENT,
    BPF_PROG_TYPE_RAW_TRACEPOINT,
    BPF_PROG_TYPE_TRACING,
)

BPF_OBJ_NAME_LEN = 16


def _memcg_accounting() -> bool:
    """Whether the kernel charges BPF memory to the memory cgroup (5.11+); when the probe
    cannot tell (no privileges), the memlock limit is raised anyway: it does no harm."""
    from . import probes

    try:
        return probes.have_memcg_accounting()
    except probes.Inconclusive:
        return False


class LoadedObject:
    """The kernel side of one prepared object."""

    def __init__(
        self, prepared: PreparedObject, rodata: Optional[dict[str, Union[int, bytes, str]]] = None
    ) -> None:
        self.prepared = prepared
        self.rodata_values = rodata or {}
        self.maps: dict[str, Map] = {}
        self.programs: dict[str, FD] = {}
        self.links: list[FD] = []
        self.warnings: list[str] = []

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close links, then programs, then maps (each close is idempotent)."""
        for link in reversed(self.links):
            link.close()
        self.links.clear()
        for prog in self.programs.values():
            prog.close()
        self.programs.clear()
        for m in self.maps.values():
            m.close()
        self.maps.clear()

    # -- load ---------------------------------------------------------------
    def load(self) -> None:
        if not _memcg_accounting():
            warning = bump_memlock_rlimit()
            if warning:
                self.warnings.append(warning)
        spec = self.prepared.spec
        btf_fd = self._load_program_btf()
        for mspec in spec.maps:
            if mspec.map_type == BPF_MAP_TYPE_PERF_EVENT_ARRAY and mspec.max_entries == 0:
                # One slot per possible CPU, as libbpf sizes perf event arrays.
                mspec = mspec._replace(max_entries=max(possible_cpus()) + 1)
            m = self.maps[mspec.name] = self._create_map(mspec)
            if mspec.initial is not None:  # global data (5.2): written once, maybe frozen
                m.update(b"\0\0\0\0", mspec.initial)
            if mspec.freeze:
                m.freeze()
        if spec.rodata is not None:
            rodata = self._create_map(spec.rodata.map_spec())
            self.maps[Globals.MAP_NAME] = rodata
            rodata.update(b"\0\0\0\0", spec.rodata.pack(self.rodata_values))
            rodata.freeze()
        self._fill_slots(BPF_MAP_TYPE_PROG_ARRAY, invert=True)
        for prog in self.prepared.programs:
            self.programs[prog.name] = self._load_program(prog)
        self._fill_slots(BPF_MAP_TYPE_PROG_ARRAY)
        if btf_fd is not None:
            btf_fd.close()  # the maps and programs hold their own references
            self._btf_fd = None

    def _load_program_btf(self) -> Optional[FD]:
        """BPF_BTF_LOAD the object's BTF (FUNCs, map types, .rodata DATASEC; 5.2+).

        Optional, as in libbpf: a kernel that rejects it gets the programs without it."""
        self._prog_btf = program_btf(self.prepared)
        try:
            self._btf_fd: Optional[FD] = btf_load(self._prog_btf.btf)
        except (BPFSyscallError, VerifierError) as err:
            self.warnings.append(f"program BTF not loaded, continuing without it: {err}")
            self._btf_fd = None
        return self._btf_fd

    def _fill_slots(self, prog_array: int, invert: bool = False) -> None:
        """Initial slots of maps of maps (``invert``: every map but prog arrays, once the
        maps exist) or of prog arrays (once the programs are loaded), as libbpf fills them."""
        for mspec in self.prepared.spec.maps:
            if not mspec.slots or (mspec.map_type == prog_array) == invert:
                continue
            owner = self.programs if mspec.map_type == prog_array else self.maps
            for index, name in sorted(mspec.slots.items()):
                target = owner.get(name)
                if target is None:  # as libbpf: an initial slot's program must be loaded
                    raise BPFSyscallError(
                        f"map {mspec.name}: slot {index} names {name!r}, which is not loaded",
                        _errno.EBADF)
                self.maps[mspec.name].update(index.to_bytes(4, "little"),
                                             target.fileno().to_bytes(4, "little"))

    def _create_map(self, mspec: MapSpec) -> Map:
        """Create a map with its key/value BTF, or without it if the kernel refuses."""
        if mspec.inner is not None and not mspec.inner_map_fd:
            # libbpf's way: a template of the inner map, closed once the outer map exists
            with self._create_map(mspec.inner) as template:
                return self._create_map(mspec._replace(inner_map_fd=template.fileno()))
        types = self._prog_btf.map_types.get(mspec.name)
        if self._btf_fd is not None and types is not None:
            try:
                return Map.create(mspec._replace(btf_fd=self._btf_fd.fileno(),
                                                 btf_key_type_id=types[0],
                                                 btf_value_type_id=types[1]))
            except BPFSyscallError as err:
                self.warnings.append(f"map {mspec.name}: created without BTF: {err}")
        try:
            return Map.create(mspec._replace(btf_fd=0, btf_key_type_id=0, btf_value_type_id=0))
        except BPFSyscallError as err:
            raise BPFSyscallError(
                f"map {mspec.name} (type {mspec.map_type}, key {mspec.key_size}, value "
                f"{mspec.value_size}, max_entries {mspec.max_entries}): {err}", err.errno
            ) from None

    def _patched(self, prog: PreparedProgram) -> bytes:
        return self._patch_maps(prog.name, prog.insns)

    def _patch_maps(self, name: str, insns: list[isa.Instruction]) -> bytes:
        """Raw instructions with the map fds written into their LD_IMM64s."""
        out = []
        for insn in insns:
            if insn.map is not None:
                m = self.maps.get(insn.map)
                if m is None:
                    raise PyBPFError(f"{name}: reference to undeclared map {insn.map!r}")
                if insn.src == isa.BPF_PSEUDO_MAP_VALUE:
                    insn = insn.with_(imm=(insn.imm & ~0xFFFFFFFF) | m.fd)
                else:
                    insn = insn.with_(imm=m.fd)
            out.append(insn.encode())
        return b"".join(out)

    def _load_program(self, prog: PreparedProgram) -> FD:
        try:
            return prog_load(
                prog.prog_type,
                self._patched(prog),
                license=prog.license,
                name=prog.name[: BPF_OBJ_NAME_LEN - 1],
                expected_attach_type=prog.expected_attach_type,
                attach_btf_id=prog.attach_btf_id,
                prog_flags=prog.prog_flags,
                kern_version=prog.kern_version,
                **self._func_info(prog.name),
            )
        except VerifierError as err:
            raise VerifierError(
                f"program {prog.name} ({prog.section}) rejected by the verifier: {err}"
                + explain_poison(err.log, prog),
                err.errno,
                err.log,
            ) from None
        except BPFSyscallError as err:
            if err.errno == _errno.EPERM and prog.section.startswith(("fentry/", "fexit/")):
                raise BPFSyscallError(
                    f"program {prog.name} ({prog.section}): {_trampoline_refusal(prog)}",
                    err.errno,
                ) from None
            raise BPFSyscallError(
                f"program {prog.name} ({prog.section}): {err}", err.errno
            ) from None

    def _func_info(self, name: str) -> dict[str, Union[int, bytes]]:
        """prog_btf_fd + func_info for BPF_PROG_LOAD when program BTF is loaded."""
        if getattr(self, "_btf_fd", None) is None:
            return {}
        return {"prog_btf_fd": self._btf_fd.fileno(),  # type: ignore[union-attr]
                "func_info": self._prog_btf.func_info[name],
                "line_info": self._prog_btf.line_info.get(name, b"")}

    def load_kernel_relocated(
        self, prog: PreparedProgram, request: KernelCoreRequest
    ) -> tuple[FD, str]:
        """Load ``prog`` unrelocated and let the kernel's CO-RE (5.17+) relocate it.

        Returns the program fd and the verifier log (level 2), whose ``relo #N``
        lines say what the kernel decided: an oracle for pybpf's engine."""
        with btf_load(request.btf) as btf_fd:
            return prog_load_log(
                prog.prog_type,
                self._patch_maps(prog.name, request.insns),
                license=prog.license,
                name=prog.name[: BPF_OBJ_NAME_LEN - 1],
                expected_attach_type=prog.expected_attach_type,
                attach_btf_id=prog.attach_btf_id,
                prog_btf_fd=btf_fd.fileno(),
                func_info=request.func_info,
                core_relos=request.core_relos,
                log_level=2,
            )

    # -- attach -------------------------------------------------------------
    def attach(self) -> None:
        for prog in self.prepared.programs:
            fd = self.programs[prog.name]
            # Links first, then any perf event fds they use: closed in reverse order.
            self.links.extend(attach_all(prog, fd))


# How a kernel answers an attach command or attach type it does not know yet.
_OLD_KERNEL = (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP)


def attach_program(prog: PreparedProgram, fd: FD) -> FD:
    """Attach and return the one fd that keeps the attachment (see :func:`attach_all`)."""
    fds = attach_all(prog, fd)
    for extra in fds[1:]:
        extra.close()  # a link holds its own reference to the perf event
    return fds[0]


def attach_all(prog: PreparedProgram, fd: FD) -> list[FD]:
    """Attach by section kind; returns the fds to close to detach (link first).

    - ``tp_btf/``, ``fentry/``, ``fexit/`` (5.5): BPF_LINK_CREATE (tracing links 5.10),
      else BPF_RAW_TRACEPOINT_OPEN with no name (5.5).
    - ``raw_tp/`` (4.17): BPF_RAW_TRACEPOINT_OPEN with the tracepoint's name.
    - ``tracepoint/CATEGORY/NAME`` (4.7) and ``kprobe/FUNC``, ``kretprobe/FUNC`` (4.1; the
      kprobe PMU 4.17): a perf event, then a BPF_PERF_EVENT link (5.15) or, before that,
      PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE.
    """
    kind = prog.section.split("/", 1)[0]
    if prog.prog_type == BPF_PROG_TYPE_TRACING:
        try:
            return [link_create(fd.fileno(), 0, prog.expected_attach_type)]
        except BPFSyscallError as err:
            if err.errno not in _OLD_KERNEL:
                raise
        return [raw_tracepoint_open(fd.fileno())]
    if prog.prog_type == BPF_PROG_TYPE_RAW_TRACEPOINT:
        return [raw_tracepoint_open(fd.fileno(), prog.attach_point)]
    if kind in ("tracepoint", "tp"):
        return _attach_perf_event(fd, _tracepoint_event(prog.attach_point))
    if kind in ("kprobe", "kretprobe"):
        return _attach_perf_event(fd, _kprobe_event(prog.attach_point, kind == "kretprobe"))
    raise PyBPFError(f"{prog.name}: don't know how to attach {prog.section}")


TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _tracepoint_event(point: str) -> FD:
    """A perf event on tracepoint ``CATEGORY/NAME``; its id comes from tracefs."""
    import os

    category, _, name = point.partition("/")
    if not name:
        raise PyBPFError(f"tracepoint {point!r}: write it as CATEGORY/NAME (sched/sched_switch)")
    for root in TRACEFS:
        path = f"{root}/events/{category}/{name}/id"
        if os.path.exists(path):
            with open(path) as f:
                tp_id = int(f.read())
            break
    else:
        if not any(os.path.isdir(f"{root}/events") for root in TRACEFS):
            raise PyBPFError(
                f"tracepoint {point}: tracefs is not mounted "
                "(mount -t tracefs nodev /sys/kernel/tracing)"
            )
        raise PyBPFError(f"tracepoint {point}: no such tracepoint in tracefs")
    attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1,
                         wakeup_events=1)  # fmt: skip
    return perf_event_open(attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)


def _kprobe_event(func: str, retprobe: bool) -> FD:
    """A perf event of the kprobe PMU (4.17) on ``func``; ``retprobe`` sets the format bit
    named in /sys/bus/event_source/devices/kprobe/format/retprobe."""
    import ctypes

    pmu = "/sys/bus/event_source/devices/kprobe"
    try:
        with open(f"{pmu}/type") as f:
            pmu_type = int(f.read())
        bit = 0
        if retprobe:
            with open(f"{pmu}/format/retprobe") as f:
                bit = int(f.read().strip().split(":")[1])
    except (OSError, ValueError, IndexError):
        raise PyBPFError(
            f"k{'ret' if retprobe else ''}probe/{func}: this kernel has no kprobe PMU "
            "(needs CONFIG_KPROBES, Linux 4.17+)"
        ) from None
    name = ctypes.create_string_buffer(func.encode())
    attr = PerfEventAttr(type=pmu_type, config=(1 << bit) if retprobe else 0, sample_period=1,
                         wakeup_events=1, config1=ctypes.addressof(name), config2=0)  # fmt: skip
    try:
        return perf_event_open(attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    except BPFSyscallError as err:
        if err.errno == _errno.ENOENT:
            raise PyBPFError(f"kprobe: no function {func!r} (see /proc/kallsyms)") from None
        raise


def _attach_perf_event(prog: FD, event: FD) -> list[FD]:
    """BPF_LINK_CREATE with BPF_PERF_EVENT (5.15), else the ioctls (4.1)."""
    try:
        try:
            return [link_create(prog.fileno(), event.fileno(), BPF_PERF_EVENT), event]
        except BPFSyscallError as err:
            if err.errno not in _OLD_KERNEL:  # BPF_PERF_EVENT links: 5.15
                raise
        ioctl(event.fileno(), PERF_EVENT_IOC_SET_BPF, prog.fileno())
        ioctl(event.fileno(), PERF_EVENT_IOC_ENABLE, 0)
        return [event]
    except BaseException:
        event.close()
        raise


def _trampoline_refusal(prog: PreparedProgram) -> str:
    """Why root got EPERM for fentry/fexit, as measured: the same load aimed at the kernel's
    own test target ``bpf_fentry_test1`` (probes.have_fentry) tells a kernel that refuses
    every BPF trampoline from one that refuses this function."""
    from . import probes

    if not probes.have_fentry():
        return ("BPF_PROG_LOAD refused with EPERM: this kernel refuses BPF trampolines (a "
                "trivial fentry program on bpf_fentry_test1 is refused too), so no "
                "fentry/fexit here; use tp_btf, raw_tp or kprobe")  # fmt: skip
    return (f"BPF_PROG_LOAD refused with EPERM: this kernel runs fentry programs "
            f"(bpf_fentry_test1 loads) but not on {prog.attach_point!r}: the function "
            "cannot be traced (notrace or not in the ftrace list)")  # fmt: skip


_POISON_CALL = re.compile(rf"^(\d+): \(85\) call unknown#{POISON_IMM}\b", re.M)


def explain_poison(log: str, prog: PreparedProgram) -> str:
    """Turn libbpf's poisoned call (``invalid func unknown#195896080``) into words:
    which relocation failed, by C type and field name."""
    if f"unknown#{POISON_IMM}" not in log:
        return ""
    poisoned: dict[int, str] = {}
    slot = 0
    for insn in prog.insns:
        if insn.imm == POISON_IMM and insn.comment:
            poisoned[slot] = insn.comment
        slot += insn.slots
    hits = [int(m.group(1)) for m in _POISON_CALL.finditer(log)]
    for index in reversed(hits):
        if index in poisoned:
            # The comment names program, instruction, type, field and the reason.
            return f"; unknown#{POISON_IMM} is a failed CO-RE relocation: {poisoned[index]}"
    return f"; unknown#{POISON_IMM} is a CO-RE relocation that failed on this kernel"


def verifier_excerpt(log: str, lines: int = 12) -> str:
    """The last lines of a verifier log: where it stopped and why."""
    kept = [line for line in log.rstrip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
