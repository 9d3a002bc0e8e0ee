"""``pybpf explain|dump|run FILE.bpf.o``: the CLI for compiled objects (:mod:`pybpf.bpfobject`).

``explain`` lists every CO-RE relocation of every program against a kernel's BTF (the
running kernel, or ``--btf FILE``); ``dump`` prints the instructions as they would load;
``run`` loads and attaches the object, prints each record of its ring buffer or perf event
array decoded with a BTF struct (``event`` by default), and at Ctrl-C its maps, typed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any, Optional, TextIO

from .btf import BTF, BTF_KIND_STRUCT
from .errors import PyBPFError


def is_object_file(path: str) -> bool:
    """A file that starts like an ELF file (the commands take it for a compiled object)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _open(path: str) -> Any:
    from .bpfobject import BPFObject

    return BPFObject.open(path)


def _select(obj: Any, patterns: Optional[list[str]]) -> list[str]:
    """Programs to load: those whose name or section matches a pattern (fnmatch), else
    the object's autoload set (sections without a leading ``?``)."""
    progs = obj.elf.spec.programs
    if not patterns:
        return [p.name for p in progs if obj.autoload[p.name]]
    chosen = [p.name for p in progs
              if any(fnmatch.fnmatchcase(p.name, pat) or fnmatch.fnmatchcase(p.section, pat)
                     for pat in patterns)]  # fmt: skip
    if not chosen:
        listing = ", ".join(f"{p.name} ({p.section})" for p in progs)
        raise PyBPFError(f"no program matches {' '.join(patterns)} (programs: {listing})")
    return chosen


def _target(path: Optional[str]) -> BTF:
    from .runner import load_btf

    return load_btf(path)


def explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybpf explain", description="Every CO-RE relocation of a compiled object.")
    parser.add_argument("object", metavar="FILE.bpf.o")
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    parser.add_argument("--json", action="store_true", help="one JSON array of relocations")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also the candidates considered and why each was rejected")
    return parser


def dump_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybpf dump", description="A compiled object's programs as they would load: "
        "linked, CO-RE relocated, maps named, relocations annotated.")
    parser.add_argument("object", metavar="FILE.bpf.o")
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    return parser


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybpf run", description="Load a compiled object, attach every program, print "
        "its events decoded by BTF; at Ctrl-C print its maps.")
    parser.add_argument("object", metavar="FILE.bpf.o")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a global variable's value before load (const volatile ones too)")
    parser.add_argument("--event-type", default="event", metavar="NAME",
                        help="the struct that decodes each record (default: event)")
    parser.add_argument("--event-format", metavar="'NAME:FMT ...'",
                        help="decode records by a struct format with field names instead "
                        "(e.g. 'task:16s delta_us:Q pid:i')")
    parser.add_argument("-P", "--program", action="append", metavar="PATTERN",
                        help="load only programs whose name or section matches (fnmatch); "
                        "default: all but '?' sections")
    parser.add_argument("--no-maps", action="store_true", help="do not print maps at the end")
    return parser


def explain(argv: list[str], out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    parser = explain_parser()
    args = parser.parse_args(argv)
    obj = _open(args.object)
    prepared = obj.prepare(_target(args.btf), [p.name for p in obj.elf.spec.programs],
                           attach_ids=False)  # fmt: skip
    from .cli import write_relocations

    write_relocations(prepared.relocations, out, args.verbose, args.json)
    return 0


def dump(argv: list[str], out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    from .disasm import btf_namers, disassemble

    parser = dump_parser()
    args = parser.parse_args(argv)
    obj = _open(args.object)
    btf = _target(args.btf)
    prepared = obj.prepare(btf, [p.name for p in obj.elf.spec.programs], attach_ids=False)
    helper, kfunc = btf_namers(btf)
    for m in prepared.spec.maps:
        out.write(f"; map {m.name}: type {m.map_type}, key {m.key_size}, value {m.value_size}, "
                  f"max_entries {m.max_entries}, flags {m.flags:#x}\n")
    for prog in prepared.programs:
        relos = {r.insn: r for r in prog.relocations}

        def note(slot: int, insn: object, relos: dict = relos) -> str:
            r = relos.get(slot)
            if r is None:
                return getattr(insn, "comment", None) or ""
            what = f"{r.type}.{r.field}" if r.field else r.type
            target = "-" if r.target is None else r.target
            return f"CO-RE {r.kind} {what} [{r.access}]: {r.local} -> {target}"

        slots = sum(i.slots for i in prog.insns)
        auto = "" if obj.autoload[prog.name] else " (not loaded by default)"
        out.write(f'; {prog.name}: SEC("{prog.section}"), {slots} instructions{auto}\n')
        out.write(f"{prog.name}:\n" + disassemble(prog.insns, helper, kfunc, note) + "\n")
    return 0


# --------------------------------------------------------------------------- run
def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="backslashreplace")
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


class FieldsCodec:
    """``--event-format 'task:16s pid:i delta_us:Q'``: named fields of a struct format (native
    alignment, as C lays the struct out), for records whose type the object's BTF lacks
    (clang emits no BTF for a struct used only by local variables)."""

    def __init__(self, text: str) -> None:
        import struct

        self.names = []
        fmt = "@"
        for item in text.split():
            name, sep, code = item.partition(":")
            if not sep or not name.isidentifier():
                raise PyBPFError(f"--event-format: {item!r} is not NAME:FORMAT (pid:i)")
            self.names.append(name)
            fmt += code
        try:
            self.st = struct.Struct(fmt)
        except struct.error as err:
            raise PyBPFError(f"--event-format: {err}") from None
        self.size = self.st.size

    def unpack(self, data: bytes) -> dict[str, Any]:
        values = self.st.unpack_from(data)
        return {n: v.split(b"\0", 1)[0] if isinstance(v, bytes) else v
                for n, v in zip(self.names, values)}  # fmt: skip


def _event_codec(obj: Any, name: str, fmt: Optional[str]) -> Any:
    from .elf.values import BTFCodec

    if fmt:
        return FieldsCodec(fmt)
    ids = obj.btf.find(name, BTF_KIND_STRUCT)
    if not ids:
        raise PyBPFError(f"the object's BTF has no struct {name!r}: name another with "
                         "--event-type NAME, or give --event-format 'NAME:FMT ...'")
    return BTFCodec(obj.btf, ids[0])


def _dump_maps(obj: Any, out: TextIO) -> None:
    """Every map that can be read, typed by the object's BTF (as bpftool map dump)."""
    from .uapi import BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_RINGBUF

    for name, m in obj.maps.items():
        if m.spec.map_type in (BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_PERF_EVENT_ARRAY):
            continue
        out.write(f"map {name}:\n")
        try:
            for key, value in m.typed_items():
                out.write(f"  {json.dumps(_printable(key))}: "
                          f"{json.dumps(_printable(value))}\n")  # fmt: skip
        except PyBPFError as err:
            out.write(f"  (cannot read: {err})\n")


def run(argv: list[str], out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from .runner import Terminated, check_privileges, stop_signals
    from .uapi import BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_RINGBUF

    parser = run_parser()
    args = parser.parse_args(argv)
    obj = _open(args.object)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: write NAME=VALUE")
        obj.set(name, value)
    programs = _select(obj, args.program)
    check_privileges()
    with obj, stop_signals():
        obj.load(programs=programs)
        obj.attach()
        readers = []
        codec = None
        for m in obj.maps.values():
            if m.spec.map_type in (BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_PERF_EVENT_ARRAY):
                codec = codec or _event_codec(obj, args.event_type, args.event_format)
                readers.append(_reader(m, codec, out, err))
        err.write(f"pybpf: {obj.name}: {len(programs)} programs attached"
                  + (", printing events" if readers else "") + "; Ctrl-C to stop\n")
        err.flush()
        try:
            while True:
                if readers:
                    for r in readers:
                        r.poll(100)
                else:
                    import time

                    time.sleep(0.2)
        except (KeyboardInterrupt, Terminated):
            pass
        finally:
            for r in readers:
                r.consume()
                r.close()
        if not args.no_maps:
            _dump_maps(obj, out)
    return 0


def _reader(m: Any, codec: Any, out: TextIO, err: TextIO) -> Any:
    from .uapi import BPF_MAP_TYPE_RINGBUF

    size = codec.size

    def emit(records: list[bytes]) -> None:
        for rec in records:
            out.write(json.dumps(_printable(codec.unpack(rec[:size].ljust(size, b"\0"))))
                      + "\n")  # fmt: skip
        out.flush()

    if m.spec.map_type == BPF_MAP_TYPE_RINGBUF:
        from .ringbuf import RingBuffer

        return RingBuffer(m.fd, on_batch=emit)
    from .perf import PerfBuffer

    return PerfBuffer(m.fd, on_batch=lambda cpu, records: emit(records),
                      on_lost=lambda cpu, n: err.write(f"Lost {n} events on CPU #{cpu}!\n"))
