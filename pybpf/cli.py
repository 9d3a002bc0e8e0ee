"""``pybpf`` / ``python -m pybpf``: run, explain and list BPF programs.

Every failure a user can cause ends in one line on stderr and a non-zero
exit status; tracebacks are for pybpf's own bugs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from .errors import PyBPFError, VerifierError

USAGE = """\
pybpf run PROGRAM [ARGS...]       load, attach and run a program (e.g. runqslower)
pybpf explain PROGRAM [--btf FILE] [--json] [-v]
                                  show every CO-RE relocation against a kernel's BTF
pybpf export PROGRAM [--listen HOST:PORT] [ARGS...]
                                  serve a program's in-kernel histograms to Prometheus
                                  (runqlat; default 127.0.0.1:9435)
pybpf list                        list the programs that ship with pybpf
pybpf asm FILE.s [-o OUT] [--btf FILE]
                                  assemble LLVM-syntax BPF assembly (raw bytes or hex listing)
pybpf disasm FILE [--btf FILE]    raw instruction bytes back to assembly text
pybpf dump PROGRAM [--btf FILE]   a program's instructions as loaded for a kernel, annotated
pybpf btf dump [--btf FILE] [--format raw]
                                  every BTF type, as bpftool's raw dump
pybpf btf show TYPE [--btf FILE]  a type as C with pahole-style offsets, holes, cachelines

PROGRAM is a shipped program's name or the path of your own program file
(a Python module defining TOOL = <a pybpf.tool.Tool>).
"""


def _cmd_run(argv: list[str]) -> int:
    from .runner import load_tool, run_tool

    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write("usage:\n" + USAGE)
        return 0 if argv else 2
    tool = load_tool(argv[0])
    return run_tool(tool, argv[1:], prog=f"pybpf run {argv[0]}")


def _cmd_explain(argv: list[str]) -> int:
    from .object import prepare
    from .runner import load_btf, load_tool, tool_parser

    parser = argparse.ArgumentParser(
        prog="pybpf explain", description="Show every CO-RE relocation of a program."
    )
    parser.add_argument("program")
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    parser.add_argument("--json", action="store_true", help="one JSON array of relocations")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="also the candidates considered and why each was rejected",
    )  # fmt: skip
    args = parser.parse_args(argv)
    tool = load_tool(args.program)
    tool_args = tool_parser(tool, args.program).parse_args([])
    tool.check_arguments(parser, tool_args)
    prepared = prepare(tool.build(tool_args), load_btf(args.btf))
    relos = prepared.relocations
    if args.json:
        json.dump([r.as_dict(args.verbose) for r in relos], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    header = ("PROGRAM", "INSN", "KIND", "TYPE", "FIELD", "ACCESS", "LOCAL", "TARGET")
    rows = [header] + [
        (r.program, str(r.insn), r.kind, r.type, r.field, r.access, str(r.local),
         "-" if r.target is None else str(r.target))
        for r in relos
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if args.verbose and n:
            _explain_candidates(relos[n - 1])
    return 0


def _explain_candidates(relo: object) -> None:
    """``explain -v``: the matched target access, then every candidate and its fate."""
    if getattr(relo, "reason", ""):
        sys.stdout.write(f"    poisoned: {relo.reason}\n")  # type: ignore[attr-defined]
    if getattr(relo, "spec", ""):
        sys.stdout.write(f"    target: {relo.spec}\n")  # type: ignore[attr-defined]
    for c in getattr(relo, "candidates", ()):
        verdict = "matched" if c.matched else "rejected"
        where = "" if c.btf_name == "vmlinux" else f" ({c.btf_name})"
        sys.stdout.write(
            f"    candidate [{c.type_id}] {c.kind.lower()} {c.type_name}{where}: {verdict}"
            + ("" if c.matched else f": {c.reason}") + "\n"
        )


def _cmd_asm(argv: list[str]) -> int:
    from .asm_text import main as asm_main

    return asm_main(argv)


def _cmd_disasm(argv: list[str]) -> int:
    from .disasm import main as disasm_main

    return disasm_main(argv)


def _cmd_dump(argv: list[str]) -> int:
    from .disasm import btf_namers, disassemble
    from .object import prepare
    from .runner import load_btf, load_tool, tool_parser

    parser = argparse.ArgumentParser(
        prog="pybpf dump",
        description="Show a program as it would be loaded against a kernel: CO-RE relocated, "
        "helpers numbered and named, maps named, relocations annotated.",
    )
    parser.add_argument("program")
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    args = parser.parse_args(argv)
    tool = load_tool(args.program)
    tool_args = tool_parser(tool, args.program).parse_args([])
    tool.check_arguments(parser, tool_args)
    btf = load_btf(args.btf)
    prepared = prepare(tool.build(tool_args), btf)
    helper, kfunc = btf_namers(btf)
    for prog, spec in zip(prepared.programs, prepared.spec.programs):
        relos = {r.insn: r for r in prog.relocations}
        source = _source_notes(spec)

        def note(slot: int, insn: object, relos: dict = relos, source: dict = source) -> str:
            r = relos.get(slot)
            comment = getattr(insn, "comment", None)
            if r is None:
                text = comment or ""
            else:
                what = f"{r.type}.{r.field}" if r.field else r.type
                target = "-" if r.target is None else r.target
                text = f"CO-RE {r.kind} {what} [{r.access}]: {r.local} -> {target}"
            line = source.get(slot)
            return f"{line}  |  {text}" if line and text else line or text

        slots = sum(i.slots for i in prog.insns)
        sys.stdout.write(f'; {prog.name}: SEC("{prog.section}"), {slots} instructions\n')
        sys.stdout.write(f"{prog.name}:\n" + disassemble(prog.insns, helper, kfunc, note) + "\n")
    return 0


def _source_notes(spec: object) -> dict[int, str]:
    """``file:line: text`` at each slot where a program's source line changes (programs
    written in pybpf.lang carry their Python source)."""
    import os

    notes: dict[int, str] = {}
    source = getattr(spec, "source", None)
    if not source:
        return notes
    slot, last = 0, None
    for insn, (file, line, text) in zip(spec.insns, source):  # type: ignore[attr-defined]
        if (file, line) != last:
            notes[slot] = f"{os.path.basename(file)}:{line}: {text}"
            last = (file, line)
        slot += insn.slots
    return notes


def _cmd_export(argv: list[str]) -> int:
    from .exporter import serve

    return serve(argv)


def _cmd_list(argv: list[str]) -> int:
    from .runner import load_tool, shipped_programs

    for name in shipped_programs():
        sys.stdout.write(f"{name:<16} {load_tool(name).description}\n")
    return 0


def _cmd_btf(argv: list[str]) -> int:
    from .btf_dump import main as btf_main

    return btf_main(argv)


COMMANDS = {
    "run": _cmd_run,
    "export": _cmd_export,
    "explain": _cmd_explain,
    "list": _cmd_list,
    "btf": _cmd_btf,
    "asm": _cmd_asm,
    "disasm": _cmd_disasm,
    "dump": _cmd_dump,
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write("usage:\n" + USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        sys.stdout.write(f"pybpf {__version__}\n")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        sys.stderr.write(f"pybpf: error: unknown command {argv[0]!r} ({', '.join(COMMANDS)})\n")
        return 2
    try:
        return command(argv[1:])
    except VerifierError as err:
        from .loader import verifier_excerpt

        sys.stderr.write(f"pybpf: error: {err}\n{verifier_excerpt(err.log)}\n")
        return 1
    except PyBPFError as err:
        sys.stderr.write(f"pybpf: error: {err}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pybpf run ... | head`: the reader went away; nothing more to say.  stdout now
        # points at /dev/null so that the interpreter's final flush cannot fail (exit 120).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
