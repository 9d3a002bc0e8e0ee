"""BPF objects as pure data, and their preparation against one kernel's BTF.

An :class:`ObjectSpec` is what a ``.bpf.o`` is to libbpf: programs (with
their section names), map definitions and read-only globals.  :func:`prepare`
does everything that depends on the target kernel but needs no syscall:
CO-RE relocations, helper numbers (from the target's ``enum bpf_func_id``),
tracepoint attach BTF ids.  So it also runs offline, against a BTF file of
another kernel (``pybpf explain --btf``).  The loader then only creates maps,
patches fds in and calls ``BPF_PROG_LOAD``.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Sequence, Union

from . import cdecl as _cd
from . import isa
from . import uapi as _uapi
from .asm import Asm, CoreAccess, Reg
from .btf import (
    BTF,
    BTF_KIND_ENUM,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_PTR,
    BTF_KIND_TYPEDEF,
)
from .btf_encoder import BTF_FUNC_STATIC
from .cdecl import Array, CType, Int, build_local_btf, encode_local_btf, strip_typedefs
from .core import (
    KIND_NAMES,
    Candidate,
    CoreEngine,
    CoreRelo,
    ModuleSource,
    describe,
    field_path,
    patch_insn,
    poison_insns,
    poison_reason,
)
from .errors import BTFError, CORERelocationError, PyBPFError
from .record import Factory, FrozenRecord, Record
from .uapi import (
    BPF_F_RDONLY_PROG,
    BPF_MAP_TYPE_ARRAY,
    BPF_PROG_TYPE_KPROBE,
    BPF_PROG_TYPE_RAW_TRACEPOINT,
    BPF_PROG_TYPE_SOCKET_FILTER,
    BPF_PROG_TYPE_TRACEPOINT,
    BPF_PROG_TYPE_TRACING,
    BPF_TRACE_FENTRY,
    BPF_TRACE_FEXIT,
    BPF_TRACE_RAW_TP,
)


class MapSpec(Record):
    """A map as a program declares it (libbpf's ``SEC(".maps")`` struct), before it
    exists in the kernel."""

    _fields = ("name", "map_type", "key_size", "value_size", "max_entries", "flags", "btf_fd",
               "btf_key_type_id", "btf_value_type_id", "inner_map_fd", "map_extra", "key_type",
               "value_type", "initial", "freeze", "inner", "slots")
    _defaults = {"flags": 0, "btf_fd": 0, "btf_key_type_id": 0, "btf_value_type_id": 0,
                 "inner_map_fd": 0, "map_extra": 0, "key_type": None, "value_type": None,
                 "initial": None, "freeze": False, "inner": None, "slots": None}

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_fd: int
    btf_key_type_id: int
    btf_value_type_id: int
    inner_map_fd: int
    map_extra: int
    # C types of key and value for the map's BTF (``bpftool map dump`` prints typed
    # entries); when None, a 1/2/4/8-byte key or value is described as __u8.._u64.
    key_type: Optional[CType]
    value_type: Optional[CType]
    # global data (a .bpf.o's .data/.rodata/.bss, .kconfig): the value written at key 0
    # after creation, and whether the map is then frozen (read-only for user space)
    initial: Optional[bytes]
    freeze: bool
    # maps of maps: the inner map's definition (a template created for BPF_MAP_CREATE's
    # inner_map_fd, 4.12); initial slots of maps of maps and prog arrays: index -> the
    # name of a map, or of a program (prog arrays), filled in once those exist
    inner: Optional[MapSpec]
    slots: Optional[dict[int, str]]


class Globals:
    """Read-only globals (``const volatile`` in C), kept in a frozen ``.rodata`` map.

    The map is created with BPF_F_RDONLY_PROG and frozen (Linux 5.2) before the
    programs load, so the verifier treats every load from it as a constant and
    deletes the branches it decides: a filter that is off costs nothing."""

    MAP_NAME = ".rodata"

    def __init__(self, variables: list[tuple[str, CType]]) -> None:
        self.variables: dict[str, tuple[CType, int]] = {}
        offset = 0
        for name, ctype in variables:
            offset = -(-offset // ctype.align) * ctype.align
            self.variables[name] = (ctype, offset)
            offset += ctype.size
        self.size = max(-(-offset // 8) * 8, 8)

    def offset(self, name: str) -> int:
        return self.variables[name][1]

    def load(self, a: Asm, dst: Reg, name: str) -> Asm:
        """Emit ``dst = name`` (two instructions: address, then load)."""
        ctype, offset = self.variables[name]
        a.ld_map_value(dst, self.MAP_NAME, offset)
        return a.ldx(dst, dst, 0, size=ctype.size)

    def address(self, a: Asm, dst: Reg, name: str) -> Asm:
        """Emit ``dst = &name``."""
        return a.ld_map_value(dst, self.MAP_NAME, self.offset(name))

    def map_spec(self) -> MapSpec:
        return MapSpec(self.MAP_NAME, BPF_MAP_TYPE_ARRAY, 4, self.size, 1, BPF_F_RDONLY_PROG)

    def pack(self, values: dict[str, Union[int, bytes, str]]) -> bytes:
        """The map's value: each variable at its offset, zero elsewhere."""
        unknown = set(values) - set(self.variables)
        if unknown:
            raise PyBPFError(f"unknown read-only globals: {', '.join(sorted(unknown))}")
        buf = bytearray(self.size)
        for name, value in values.items():
            ctype, offset = self.variables[name]
            base = strip_typedefs(ctype)
            if isinstance(base, Array):
                raw = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
                raw = raw[: base.size - 1] if isinstance(value, str) else raw[: base.size]
                buf[offset : offset + len(raw)] = raw
            elif isinstance(base, Int):
                fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[base.size]
                fmt = "<" + (fmt if base.signed else fmt.upper())
                struct.pack_into(fmt, buf, offset, value)
            else:
                raise PyBPFError(f"global {name}: unsupported type {ctype!r}")
        return bytes(buf)


class ProgramSpec(Record):
    """One program: a libbpf-style section name and its instructions."""

    _fields = ("name", "section", "insns", "license", "prog_type", "expected_attach_type",
               "prog_flags", "attach_btf", "kern_version", "core_relos", "func_info", "line_info",
               "source")
    _defaults = {"license": "GPL", "prog_type": None, "expected_attach_type": 0, "prog_flags": 0,
                 "attach_btf": False, "kern_version": 0, "core_relos": None, "func_info": b"",
                 "line_info": b"", "source": None}

    name: str
    section: str  # "tp_btf/sched_switch", "raw_tp/sched_switch"
    insns: list[isa.Instruction]
    license: str
    # A compiled object's program (pybpf.elf) says what the section name means and brings
    # its CO-RE records (by slot, local types in ObjectSpec.btf), func_info and line_info.
    prog_type: Optional[int]
    expected_attach_type: int
    prog_flags: int
    attach_btf: bool
    kern_version: int
    core_relos: Optional[dict[int, CoreRelo]]
    func_info: bytes
    line_info: bytes
    # per instruction, the (file, line, text) of the source it came from (pybpf.lang):
    # encoded as the program BTF's line_info, which the verifier log and bpftool show
    source: Optional[list[tuple[str, int, str]]]

    @property
    def attach_point(self) -> str:
        return self.section.split("/", 1)[1] if "/" in self.section else ""


class ObjectSpec(Record):
    _fields = ("name", "programs", "maps", "rodata", "btf")
    _defaults = {"maps": Factory(list), "rodata": None, "btf": None}

    name: str
    programs: list[ProgramSpec]
    maps: list[MapSpec]
    rodata: Optional[Globals]
    # The object's own BTF (a .bpf.o's .BTF, finalized): CO-RE local types and program BTF.
    btf: Optional[bytes]



class Relocation(FrozenRecord):
    """One CO-RE relocation as ``pybpf explain`` shows it.

    ``target`` is None when the instruction was poisoned (``reason`` says why);
    ``spec`` is the matched target access (libbpf's format), ``candidates``
    every target type considered, for ``explain -v``."""

    _fields = ("program", "insn", "kind", "type", "field", "access", "local", "target", "reason",
               "spec", "candidates")
    _defaults = {"reason": "", "spec": "", "candidates": ()}

    program: str
    insn: int
    kind: str
    type: str
    field: str
    access: str
    local: int
    target: Optional[int]
    reason: str
    spec: str
    candidates: tuple[Candidate, ...]

    def as_dict(self, verbose: bool = False) -> dict[str, object]:
        d: dict[str, object] = {
            "program": self.program, "insn": self.insn, "kind": self.kind, "type": self.type,
            "field": self.field, "access": self.access, "local": self.local,
            "target": self.target,
        }  # fmt: skip
        if verbose:
            d["reason"] = self.reason
            d["spec"] = self.spec
            d["candidates"] = [
                {"btf": c.btf_name, "id": c.type_id, "name": c.type_name, "kind": c.kind,
                 "matched": c.matched, "detail": c.reason}
                for c in self.candidates
            ]  # fmt: skip
        return d


class PreparedProgram(Record):
    _fields = ("name", "section", "prog_type", "expected_attach_type", "attach_btf_id",
               "attach_point", "insns", "license", "relocations", "core_relos", "prog_flags",
               "kern_version")
    _defaults = {"prog_flags": 0, "kern_version": 0}

    name: str
    section: str
    prog_type: int
    expected_attach_type: int
    attach_btf_id: int
    attach_point: str
    insns: list[isa.Instruction]  # relocated; map references still by name
    license: str
    relocations: list[Relocation]
    core_relos: list[CoreRelo]  # what BPF_PROG_LOAD's core_relos would carry (local values)
    prog_flags: int
    kern_version: int


class PreparedObject(Record):
    _fields = ("spec", "programs", "local_btf")

    spec: ObjectSpec
    programs: list[PreparedProgram]
    local_btf: bytes

    @property
    def relocations(self) -> list[Relocation]:
        return [r for p in self.programs for r in p.relocations]


# ---------------------------------------------------------------------------
HELPER_ENUM = "bpf_func_id"


class _HelperIds:
    """Helper numbers from the target's ``enum bpf_func_id`` (``BPF_FUNC_<name>``)."""

    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self._values: Optional[dict[str, int]] = None

    def __getitem__(self, name: str) -> int:
        if self._values is None:
            ids = self.btf.find(HELPER_ENUM, BTF_KIND_ENUM)
            if not ids:
                raise BTFError(f"the kernel's BTF has no 'enum {HELPER_ENUM}': helpers unknown")
            self._values = {v.name: v.value for v in self.btf.type(ids[0]).values}
        value = self._values.get("BPF_FUNC_" + name)
        if value is None:
            raise PyBPFError(f"helper bpf_{name}() does not exist on this kernel")
        return value


def _tracepoint_btf_id(btf: BTF, tp: str) -> int:
    """Id of ``typedef btf_trace_<tp>``: what a tp_btf program attaches to (5.5)."""
    ids = btf.find("btf_trace_" + tp, BTF_KIND_TYPEDEF)
    if not ids:
        raise PyBPFError(f"tracepoint {tp!r} has no btf_trace_{tp} type in the kernel's BTF")
    tid = ids[0]
    ptr = btf.type(btf.type(tid).type)
    if ptr.kind != BTF_KIND_PTR or btf.type(ptr.type).kind != BTF_KIND_FUNC_PROTO:
        raise PyBPFError(f"btf_trace_{tp} is not a function pointer typedef")
    return tid


def _core_roots(programs: list[ProgramSpec]) -> list[CType]:
    """The local root types of all CO-RE accesses, in first-use order."""
    roots: list[CType] = []
    for prog in programs:
        for insn in prog.insns:
            if isinstance(insn.core, CoreAccess) and insn.core.root not in roots:
                roots.append(insn.core.root)
    return roots


# libbpf section prefix -> (program type, expected attach type); the loader attaches each.
# tp_btf/fentry/fexit 5.5, raw_tp 4.17, tracepoint 4.7, kprobe/kretprobe 4.1.
_SECTION_KINDS = {
    "tp_btf": (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP),
    "fentry": (BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY),
    "fexit": (BPF_PROG_TYPE_TRACING, BPF_TRACE_FEXIT),
    "raw_tp": (BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
    "raw_tracepoint": (BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
    "tracepoint": (BPF_PROG_TYPE_TRACEPOINT, 0),
    "tp": (BPF_PROG_TYPE_TRACEPOINT, 0),
    "kprobe": (BPF_PROG_TYPE_KPROBE, 0),
    "kretprobe": (BPF_PROG_TYPE_KPROBE, 0),
    "socket": (BPF_PROG_TYPE_SOCKET_FILTER, 0),  # loaded and test-run, not attached (3.19)
}
_WHOLE_SECTIONS = ("socket",)  # sections without a "/attach point"


def _program_kind(section: str) -> tuple[int, int]:
    kind = section.split("/", 1)[0]
    if kind not in _SECTION_KINDS or ("/" not in section and kind not in _WHOLE_SECTIONS):
        raise PyBPFError(
            f"program section {section!r}: supported are "
            + ", ".join(f"{k}/..." for k in _SECTION_KINDS)
        )
    return _SECTION_KINDS[kind]


def _attach_btf_id(btf: BTF, section: str, attach_point: str) -> int:
    """What a TRACING program names in attach_btf_id: the ``btf_trace_<tp>`` typedef for
    tp_btf, the traced function's FUNC for fentry/fexit (5.5), ``bpf_lsm_<hook>`` for lsm
    (5.7), ``bpf_iter_<target>`` for iter (5.8): libbpf's prefixes."""
    kind = section.lstrip("?").split("/", 1)[0].split(".", 1)[0]
    if kind == "tp_btf":
        return _tracepoint_btf_id(btf, attach_point)
    if kind == "freplace":
        raise PyBPFError(f"{section}: freplace programs need a target program (not supported)")
    prefix = {"lsm": "bpf_lsm_", "lsm_cgroup": "bpf_lsm_", "iter": "bpf_iter_"}.get(kind, "")
    ids = btf.find(prefix + attach_point, BTF_KIND_FUNC)
    if not ids:
        raise PyBPFError(f"{section}: no function {attach_point!r} in the kernel's BTF")
    return ids[0]


def prepare(
    spec: ObjectSpec,
    target: BTF,
    *,
    modules: Sequence[ModuleSource] = (),
    rules: str = "libbpf",
    attach_target: Optional[BTF] = None,
) -> PreparedObject:
    """Relocate every program of ``spec`` for the kernel described by ``target``.

    ``modules``: module BTF searched when vmlinux has no candidate (libbpf's
    order); ``rules``: "libbpf" (default) or "kernel" (the kernel's copy of
    relo_core.c, see :mod:`pybpf.core`); ``attach_target``: the BTF that attach ids come
    from when it is not ``target`` (CO-RE against a custom BTF, attach to the running
    kernel: libbpf's ``btf_custom_path``)."""
    if spec.btf is not None:
        local_bytes, local_ids = spec.btf, {}
    else:
        local_bytes, local_ids = encode_local_btf(_core_roots(spec.programs))
    local_btf = BTF.from_bytes(local_bytes)
    engine = CoreEngine(local_btf, target, modules=modules, rules=rules)
    helpers = _HelperIds(target)
    prepared = []
    for prog in spec.programs:
        if prog.prog_type is not None:
            prog_type, attach_type = prog.prog_type, prog.expected_attach_type
            needs_btf_id = prog.attach_btf
        else:
            prog_type, attach_type = _program_kind(prog.section)
            needs_btf_id = prog_type == BPF_PROG_TYPE_TRACING
        attach_btf_id = (
            _attach_btf_id(attach_target or target, prog.section, prog.attach_point)
            if needs_btf_id else 0
        )  # fmt: skip
        elf_relos = prog.core_relos or {}
        insns: list[isa.Instruction] = []
        reports: list[Relocation] = []
        relos: list[CoreRelo] = []
        slot = 0
        for insn in prog.insns:
            slots = insn.slots
            if insn.helper is not None:
                insn = insn.with_(imm=helpers[insn.helper])
            if isinstance(insn.core, CoreAccess):
                core = insn.core
                relo = CoreRelo(slot, local_ids[id(core.root)], core.access, core.kind)
            elif slot in elf_relos:
                relo = elf_relos[slot]
            else:
                insns.append(insn)
                slot += slots
                continue
            what = f"program {prog.name}: insn {slot}: {describe(local_btf, relo)}"
            try:
                result = engine.relocate(relo)
                patched = patch_insn(insn, result, what)
            except (CORERelocationError, BTFError) as err:
                raise CORERelocationError(f"{what}: {err}") from None
            poisoned = result.poison or (
                result.fail_memsz_adjust and insn.cls in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX)
            )
            reason = poison_reason(result) if poisoned else ""
            if poisoned:
                patched = poison_insns(insn, f"{what}: {reason}")
            insns.extend(patched)
            relos.append(relo)
            reports.append(
                Relocation(
                    prog.name, slot, KIND_NAMES[relo.kind], local_btf.type(relo.type_id).name,
                    field_path(local_btf, relo), relo.access, result.orig_val,
                    None if poisoned else result.new_val, reason, result.target_spec,
                    result.candidates,
                )
            )  # fmt: skip
            slot += slots
        prepared.append(
            PreparedProgram(
                prog.name, prog.section, prog_type, attach_type, attach_btf_id,
                prog.attach_point, insns, prog.license, reports, relos, prog.prog_flags,
                prog.kern_version,
            )
        )  # fmt: skip
    return PreparedObject(spec, prepared, local_bytes)


class KernelCoreRequest(Record):
    """What BPF_PROG_LOAD needs to let the kernel relocate a program itself (5.17+).

    The kernel runs libbpf's own ``relo_core.c``; comparing its answers with
    pybpf's is an oracle no one here wrote.  Instructions carry the *local*
    values (the kernel insists), the program BTF holds the local types, a
    FUNC for ``func_info`` (without it the kernel ignores program BTF) and the
    access strings that ``core_relos`` point into."""

    _fields = ("btf", "func_info", "core_relos", "insns")

    btf: bytes
    func_info: bytes
    core_relos: bytes
    insns: list[isa.Instruction]


_FUNC_INFO = struct.Struct("<II")  # struct bpf_func_info { u32 insn_off; u32 type_id; }


def _core_relo_layout() -> Any:  # a construct.Struct
    """``struct bpf_core_relo`` (include/uapi/linux/bpf.h, 5.17), declared with construct.

    Built on first use: this is the kernel-CO-RE path (tests, learning), not the
    run path, which must not pay construct's ~50 ms import."""
    from construct import Int32ul, Struct

    return Struct(
        "insn_off" / Int32ul,  # byte offset of the instruction
        "type_id" / Int32ul,  # local root type id in program BTF
        "access_str_off" / Int32ul,  # "0:1:2" in program BTF's strings
        "kind" / Int32ul,  # enum bpf_core_relo_kind
    )


def kernel_core_request(spec: ObjectSpec, program: str, target: BTF) -> KernelCoreRequest:
    """Program BTF, func_info and core_relos for ``program``, instructions unrelocated.

    The local types are encoded exactly as :func:`prepare` encodes them (all
    programs' roots, same order), so local type ids agree with pybpf's."""
    (prog,) = [p for p in spec.programs if p.name == program]
    builder, ids = build_local_btf(_core_roots(spec.programs))
    ctx = builder.add_ptr(builder.add_int("unsigned long long", 8))
    proto = builder.add_func_proto(builder.add_int("int", 4, signed=True), [("ctx", ctx)])
    func = builder.add_func(prog.name, proto, BTF_FUNC_STATIC)
    helpers = _HelperIds(target)
    core_relo = _core_relo_layout()
    relos = []
    insns = []
    slot = 0
    for insn in prog.insns:
        if insn.helper is not None:
            insn = insn.with_(imm=helpers[insn.helper])
        if isinstance(insn.core, CoreAccess):
            core = insn.core
            relos.append(
                core_relo.build(
                    {
                        "insn_off": slot * 8,
                        "type_id": ids[id(core.root)],
                        "access_str_off": builder.add_string(core.access),
                        "kind": core.kind,
                    }
                )
            )
        insns.append(insn)
        slot += insn.slots
    return KernelCoreRequest(
        builder.encode(), _FUNC_INFO.pack(0, func), b"".join(relos), insns
    )


# --------------------------------------------------------------------------- program BTF
class ProgramBTF(Record):
    """The object's own BTF (what clang puts in a ``.bpf.o``'s ``.BTF``), for BPF_BTF_LOAD.

    ``func_info``: per program, its ``struct bpf_func_info`` (one FUNC at insn 0): with it
    the kernel keeps the full name (bpftool shows it instead of the 15-character
    ``prog_name``) and a btf_id (5.0).  ``map_types``: per map, the (key, value) type ids
    for BPF_MAP_CREATE (typed ``bpftool map dump``); ``.rodata`` has key 0 and a DATASEC
    value, the kernel's rule for global-data maps (5.2)."""

    _fields = ("btf", "func_info", "map_types", "line_info")
    _defaults = {"line_info": Factory(dict)}

    btf: bytes
    func_info: dict[str, bytes]
    map_types: dict[str, tuple[int, int]]
    line_info: dict[str, bytes]


# fd-holding and keyless maps: the kernel refuses key/value BTF for them (map_check_no_btf).
_NO_BTF_MAPS = frozenset(getattr(_uapi, "BPF_MAP_TYPE_" + n) for n in (
    "PROG_ARRAY", "PERF_EVENT_ARRAY", "STACK_TRACE", "CGROUP_ARRAY", "ARRAY_OF_MAPS",
    "HASH_OF_MAPS", "DEVMAP", "SOCKMAP", "CPUMAP", "XSKMAP", "SOCKHASH",
    "REUSEPORT_SOCKARRAY", "DEVMAP_HASH", "STRUCT_OPS", "RINGBUF", "USER_RINGBUF"))
_SIZED_INTS = {1: _cd.u8, 2: _cd.u16, 4: _cd.u32, 8: _cd.u64}


def program_btf(prepared: PreparedObject) -> ProgramBTF:
    """Encode FUNC/FUNC_PROTO per program, map key/value types and ``.rodata``'s DATASEC.

    A compiled object brings all of it: its own BTF, func_info and line_info."""
    spec = prepared.spec
    if spec.btf is not None:
        return ProgramBTF(
            spec.btf,
            {p.name: p.func_info for p in spec.programs},
            {m.name: (m.btf_key_type_id, m.btf_value_type_id) for m in spec.maps
             if m.map_type not in _NO_BTF_MAPS and m.btf_value_type_id},
            {p.name: p.line_info for p in spec.programs},
        )  # fmt: skip
    ctx = _cd.Ptr(_cd.u64)
    ret = _cd.s32
    wanted: list[CType] = [ctx, ret]
    map_ctypes: dict[str, tuple[CType, CType]] = {}
    for m in spec.maps:
        if m.map_type in _NO_BTF_MAPS:
            continue
        key = m.key_type or _SIZED_INTS.get(m.key_size)
        value = m.value_type or _SIZED_INTS.get(m.value_size)
        if key is None or value is None or key.size != m.key_size or value.size != m.value_size:
            continue
        map_ctypes[m.name] = (key, value)
        wanted += (key, value)
    if spec.rodata is not None:
        wanted += [ctype for ctype, _ in spec.rodata.variables.values()]
    builder, ids = build_local_btf(wanted)
    proto = builder.add_func_proto(ids[id(ret)], [("ctx", ids[id(ctx)])])
    # One FUNC per subprogram, in order: the kernel matches func_info to the
    # subprograms it finds (main program, then every bpf-to-bpf call target).
    func_info = {
        p.name: b"".join(
            _FUNC_INFO.pack(
                start,
                builder.add_func(p.name if i == 0 else f"{p.name}_sub{i}", proto, BTF_FUNC_STATIC),
            )
            for i, start in enumerate(isa.subprog_starts(p.insns))
        )
        for p in prepared.programs
    }
    line_info = {p.name: _line_info(builder, p) for p in spec.programs if p.source}
    map_types = {name: (ids[id(k)], ids[id(v)]) for name, (k, v) in map_ctypes.items()}
    if spec.rodata is not None:
        secinfos = []
        for name, (ctype, offset) in spec.rodata.variables.items():
            # const volatile, as C declares read-only globals
            var_type = builder.add_const(builder.add_volatile(ids[id(ctype)]))
            secinfos.append((builder.add_var(name, var_type), offset, ctype.size))
        datasec = builder.add_datasec(Globals.MAP_NAME, spec.rodata.size, secinfos)
        map_types[Globals.MAP_NAME] = (0, datasec)
    return ProgramBTF(builder.encode(), func_info, map_types, line_info)


_LINE_INFO = struct.Struct("<IIII")  # struct bpf_line_info (include/uapi/linux/bpf.h, 5.0)


def _line_info(builder: Any, prog: ProgramSpec) -> bytes:
    """One ``bpf_line_info`` where the source line changes and at every subprogram
    start (the kernel wants one there): insn_off, file_name_off, line_off, line << 10."""
    assert prog.source is not None
    starts = set(isa.subprog_starts(prog.insns))
    out = []
    last = None
    slot = 0
    for insn, (file, line, text) in zip(prog.insns, prog.source):
        if (file, line) != last or slot in starts:
            out.append(_LINE_INFO.pack(slot, builder.add_string(file),
                                       builder.add_string(text), line << 10))  # fmt: skip
            last = (file, line)
        slot += insn.slots
    return b"".join(out)
