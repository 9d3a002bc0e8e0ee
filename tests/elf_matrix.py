"""Load every program of a compiled object with pybpf and with libbpf; compare.

For each program: does libbpf load it alone (and with which errno does the kernel refuse
it)?  pybpf must fail the same way.  Then the programs libbpf loads are loaded together
by both, and the kernel's translated instructions of each program are compared.

Normalisation: an ``LD_IMM64`` of a map (``BPF_PSEUDO_MAP_FD``/``_VALUE`` in the dump,
whose immediate is the map's *id*) is replaced by the map's name, type, key and value
sizes, entries and flags from ``BPF_OBJ_GET_INFO_BY_FD`` (plus the value offset): ids
differ between two loads, nothing else may.  Everything else is compared byte for byte.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import Optional

import libbpf_oracle

from pybpf.bpfobject import BPFObject
from pybpf.errors import BPFSyscallError, PyBPFError, VerifierError
from pybpf.syscall import map_get_fd_by_id, map_info, prog_info


def normalised_xlated(fd: int) -> list[object]:
    raw = prog_info(fd, xlated=True).xlated_insns or b""
    out: list[object] = []
    i = 0
    while i < len(raw):
        op, regs, off, imm = struct.unpack_from("<BBhi", raw, i)
        if op == 0x18 and regs >> 4 in (1, 2):  # BPF_PSEUDO_MAP_FD / _VALUE: imm is a map id
            with map_get_fd_by_id(imm) as mfd:
                m = map_info(mfd.fileno())
            value_off = struct.unpack_from("<i", raw, i + 12)[0]
            out.append(("map", regs, off, m.name, m.type, m.key_size, m.value_size,
                        m.max_entries, m.map_flags, value_off))  # fmt: skip
            i += 16
            continue
        out.append(raw[i : i + 8])
        i += 8
    return out


@dataclass
class Result:
    object: str
    programs: list[str]
    loaded: list[str] = field(default_factory=list)  # by both, xlated equal
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> errno, reason
    mismatches: list[str] = field(default_factory=list)
    ids: dict[str, set[int]] = field(default_factory=lambda: {"prog": set(), "map": set()})
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # maps sized at run time


# What the tools size at run time (their objects leave it 0): a stack map's value is its
# depth (127 frames, perf_max_stack_depth) times 8; hash maps get 10240 entries.
STACK_DEPTH = 127
DEFAULT_ENTRIES = 10240


def runtime_sizes(obj: BPFObject) -> dict[str, tuple[int, int]]:
    """The same run-time sizes for pybpf and libbpf: maps the object leaves unsized."""
    from pybpf.uapi import BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_STACK_TRACE

    out = {}
    for m in obj.elf.spec.maps:
        entries = DEFAULT_ENTRIES if (m.max_entries == 0 and
                                      m.map_type != BPF_MAP_TYPE_PERF_EVENT_ARRAY) else 0
        value = STACK_DEPTH * 8 if m.map_type == BPF_MAP_TYPE_STACK_TRACE and \
            m.value_size == 0 else 0  # fmt: skip
        if entries or value:
            out[m.name] = (entries, value)
    return out


def _open_sized(path: str, sizes: dict[str, tuple[int, int]]) -> BPFObject:
    obj = BPFObject.open(path)
    for name, (entries, value) in sizes.items():
        obj.resize(name, max_entries=entries or None, value_size=value or None)
    return obj


def _pybpf_error(path: str, program: str,
                 sizes: dict[str, tuple[int, int]]) -> Optional[tuple[int, str]]:  # fmt: skip
    try:
        with _open_sized(path, sizes) as obj:
            obj.load(programs=[program])
    except (VerifierError, BPFSyscallError) as err:
        return err.errno, str(err).splitlines()[0]
    except PyBPFError as err:
        return 0, str(err).splitlines()[0]
    return None


def compare_object(name: str, path: str) -> Result:
    with BPFObject.open(path) as probe:
        names = [p.name for p in probe.elf.spec.programs]
        sizes = runtime_sizes(probe)
    res = Result(name, names, sizes=sizes)
    ok = []
    for prog in names:
        with libbpf_oracle.LibbpfObject(path, [prog], sizes) as lo:
            lib_err = lo.error
        ours = _pybpf_error(path, prog, sizes)
        if lib_err == 0:
            if ours is not None:
                res.mismatches.append(f"{prog}: libbpf loads it, pybpf: {ours[1]}")
            else:
                ok.append(prog)
        else:
            if ours is None:
                res.mismatches.append(f"{prog}: libbpf fails (errno {lib_err}), pybpf loads it")
            elif ours[0] != lib_err and not (
                # libbpf: ESRCH when the attach target is not in the kernel's BTF; pybpf
                # finds that before any syscall, a PyBPFError with no errno
                lib_err == errno.ESRCH and ours[0] == 0 and "in the kernel's BTF" in ours[1]
            ):
                res.mismatches.append(f"{prog}: libbpf errno {lib_err}, pybpf {ours}")
            else:
                res.refused[prog] = (lib_err, ours[1])
    if ok:
        compare_together(path, ok, res)
    return res


def compare_together(path: str, programs: list[str], res: Result) -> None:
    """Load ``programs`` together with libbpf and with pybpf; compare each one's xlated."""
    sizes = res.sizes
    with libbpf_oracle.LibbpfObject(path, programs, sizes) as lo, \
            _open_sized(path, sizes) as obj:  # fmt: skip
        if lo.error:
            res.mismatches.append(f"libbpf cannot load {programs} together: errno {lo.error}")
            return
        obj.load(programs=programs)
        for m in obj.maps.values():
            res.ids["map"].add(m.info().id)
        for prog in programs:
            for fd in (lo.fd(prog), obj.programs[prog].fileno()):
                info = prog_info(fd)
                res.ids["prog"].add(info.id)
                res.ids["map"].update(info.map_ids)
            theirs = normalised_xlated(lo.fd(prog))
            ours_x = normalised_xlated(obj.programs[prog].fileno())
            if theirs == ours_x:
                if prog not in res.loaded:
                    res.loaded.append(prog)
            else:
                diff = next(i for i, (a, b) in enumerate(zip(theirs, ours_x)) if a != b) \
                    if len(theirs) == len(ours_x) else "length"  # fmt: skip
                res.mismatches.append(f"{prog}: xlated differs ({len(theirs)} vs "
                                      f"{len(ours_x)} insns, first at {diff})")


def _reason(text: str) -> str:
    """The kernel's reason in a few words, for the table."""
    if "EPERM" in text and "fentry/fexit need" in text:
        return "EPERM: no BPF trampolines on this kernel (fentry/fexit)"
    if "failed CO-RE relocation" in text:
        return "EINVAL: CO-RE: " + text.rsplit(": ", 1)[-1]
    if "in the kernel's BTF" in text:
        return "ESRCH: " + text.split(": ", 1)[-1]
    return text


def markdown(results: list[Result]) -> str:
    rows = ["| object | programs | loaded, xlated = libbpf's | refused by the kernel "
            "(same errno for libbpf) |", "|---|---|---|---|"]
    for r in results:
        reasons: dict[str, list[str]] = {}
        for prog, (_errno, text) in r.refused.items():
            reasons.setdefault(_reason(text), []).append(prog)
        refused = "; ".join(f"{len(v)}× {k}" if len(v) > 1 else f"{v[0]}: {k}"
                            for k, v in reasons.items())  # fmt: skip
        sized = " (maps sized: " + ", ".join(r.sizes) + ")" if r.sizes else ""
        rows.append(f"| {r.object}{sized} | {len(r.programs)} | {len(r.loaded)} | "
                    f"{refused or '-'} |")
    total = sum(len(r.programs) for r in results)
    loaded = sum(len(r.loaded) for r in results)
    rows.append(f"| **{len(results)} objects** | **{total}** | **{loaded}** | "
                f"**{total - loaded}** |")
    return "\n".join(rows)


if __name__ == "__main__":  # python tests/elf_matrix.py > table.md (root)
    import bpf_objects

    objs = bpf_objects.objects()
    print(markdown([compare_object(n, p) for n, p in sorted(objs.items())]))
