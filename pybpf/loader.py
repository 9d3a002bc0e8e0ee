"""Load a prepared object into the kernel: maps, programs, links; tear it down.

The life cycle of a libbpf skeleton: ``load()`` creates the maps, fills and
freezes ``.rodata``, patches map fds into ``LD_IMM64`` instructions and calls
``BPF_PROG_LOAD``; ``attach()`` creates the links; ``close()`` (or leaving the
``with`` block) closes every fd, which is what makes the kernel free programs,
links and maps: nothing is pinned, so nothing survives the process.
"""

from __future__ import annotations

import re
from dataclasses import replace
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
    FD,
    btf_load,
    bump_memlock_rlimit,
    link_create,
    possible_cpus,
    prog_load,
    prog_load_log,
    raw_tracepoint_open,
)
from .uapi import (
    BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    BPF_PROG_TYPE_RAW_TRACEPOINT,
    BPF_PROG_TYPE_TRACING,
)

BPF_OBJ_NAME_LEN = 16


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
        warning = bump_memlock_rlimit()
        if warning:
            self.warnings.append(warning)
        spec = self.prepared.spec
        btf_fd = self._load_program_btf()
        for mspec in spec.maps:
            if mspec.map_type == BPF_MAP_TYPE_PERF_EVENT_ARRAY and mspec.max_entries == 0:
                # One slot per possible CPU, as libbpf sizes perf event arrays.
                mspec = replace(mspec, max_entries=max(possible_cpus()) + 1)
            self.maps[mspec.name] = self._create_map(mspec)
        if spec.rodata is not None:
            rodata = self._create_map(spec.rodata.map_spec())
            self.maps[Globals.MAP_NAME] = rodata
            rodata.update(b"\0\0\0\0", spec.rodata.pack(self.rodata_values))
            rodata.freeze()
        for prog in self.prepared.programs:
            self.programs[prog.name] = self._load_program(prog)
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

    def _create_map(self, mspec: MapSpec) -> Map:
        """Create a map with its key/value BTF, or without it if the kernel refuses."""
        types = self._prog_btf.map_types.get(mspec.name)
        if self._btf_fd is not None and types is not None:
            try:
                return Map.create(replace(mspec, btf_fd=self._btf_fd.fileno(),
                                          btf_key_type_id=types[0],
                                          btf_value_type_id=types[1]))
            except BPFSyscallError as err:
                self.warnings.append(f"map {mspec.name}: created without BTF: {err}")
        return Map.create(mspec)

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
                **self._func_info(prog.name),
            )
        except VerifierError as err:
            raise VerifierError(
                f"program {prog.name} ({prog.section}) rejected by the verifier: {err}"
                + explain_poison(err.log, prog),
                err.errno,
                err.log,
            ) from None

    def _func_info(self, name: str) -> dict[str, Union[int, bytes]]:
        """prog_btf_fd + func_info for BPF_PROG_LOAD when program BTF is loaded."""
        if getattr(self, "_btf_fd", None) is None:
            return {}
        return {"prog_btf_fd": self._btf_fd.fileno(),  # type: ignore[union-attr]
                "func_info": self._prog_btf.func_info[name]}

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
            self.links.append(attach_program(prog, fd))


def attach_program(prog: PreparedProgram, fd: FD) -> FD:
    """tp_btf: BPF_LINK_CREATE (5.8+), else BPF_RAW_TRACEPOINT_OPEN (5.5+)."""
    if prog.prog_type == BPF_PROG_TYPE_TRACING:
        try:
            return link_create(fd.fileno(), 0, prog.expected_attach_type)
        except BPFSyscallError as err:
            if err.errno not in (22, 95, 524):  # EINVAL, EOPNOTSUPP, ENOTSUPP: old kernel
                raise
        return raw_tracepoint_open(fd.fileno())
    if prog.prog_type == BPF_PROG_TYPE_RAW_TRACEPOINT:
        return raw_tracepoint_open(fd.fileno(), prog.attach_point)
    raise PyBPFError(f"{prog.name}: don't know how to attach {prog.section}")


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
