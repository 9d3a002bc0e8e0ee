"""``pybpf`` / ``python -m pybpf``: run, explain and list BPF programs.

Every failure a user can cause ends in one line on stderr and a non-zero
exit status; tracebacks are for pybpf's own bugs.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Callable, Optional, TextIO

from .errors import PyBPFError, VerifierError

USAGE = """\
pybpf run PROGRAM [ARGS...]       load, attach and run a program (e.g. runqslower)
pybpf run FILE.bpf.o [--set NAME=VALUE]... [--event-type NAME] [-P PATTERN]...
                                  a compiled object: attach, print its events, then its maps
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
pybpf btf dump [--btf FILE] [--base FILE] [--format raw]
                                  every BTF type, as bpftool's raw dump
pybpf btf show TYPE [--btf FILE] [--base FILE]
                                  a type as C with pahole-style offsets, holes, cachelines

PROGRAM is a shipped program's name (pybpf list) or the path of your own program
file (a Python module defining TOOL = <a pybpf.tool.Tool>); run, explain and dump
also take a compiled object (FILE.bpf.o, built by clang). A FILE of asm and
disasm, and asm's OUT, may be '-': stdin, stdout.
`pybpf COMMAND --help` and `pybpf run PROGRAM --help` list every option.
"""


def _programs_epilog() -> str:
    from .runner import load_tool, shipped_programs

    lines = ["programs that ship with pybpf:"]
    lines += [f"  {name:<12} {load_tool(name).description}" for name in shipped_programs()]
    return "\n".join(lines)


def run_parser() -> argparse.ArgumentParser:
    """``pybpf run``'s own usage; a program's options are its own parser's
    (``pybpf run PROGRAM --help``)."""
    parser = argparse.ArgumentParser(
        prog="pybpf run",
        usage="pybpf run [-h] PROGRAM [--btf FILE] [-v] [PROGRAM ARGS...]",
        description=textwrap.fill(
            "Load a program's BPF object (CO-RE relocated for the running kernel), attach "
            "it, print what it reports, and remove everything of it from the kernel on "
            "Ctrl-C, SIGTERM or its end. `pybpf run PROGRAM --help` lists a program's "
            "options.", 79),
        epilog=_programs_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("program", metavar="PROGRAM", help="a shipped program's name "
                        "(below) or the path of your own program file (a .py module that "
                        "defines TOOL = <a pybpf.tool.Tool>; see docs/api.md)")  # fmt: skip
    _add_common_help(parser)
    return parser


def _add_common_help(parser: argparse.ArgumentParser) -> None:
    """The options every program takes (``runner.add_load_arguments``), for the help only."""
    group = parser.add_argument_group("options of every program")
    group.add_argument("--btf", metavar="FILE", help="target BTF (raw or .xz) when the "
                       "kernel has no /sys/kernel/btf/vmlinux")  # fmt: skip
    group.add_argument("-v", "--verbose", action="store_true",
                       help="print CO-RE relocations and load details to stderr")  # fmt: skip


def _program_first(make_parser: Callable[[], argparse.ArgumentParser], argv: list[str]) -> None:
    """``pybpf run|export`` without a program: its help (exit 0) or a usage error (exit 2).
    The parser is made only then: it imports every shipped program (start-up time)."""
    if argv and not argv[0].startswith("-"):
        return
    parser = make_parser()
    if not argv:
        parser.error("the following arguments are required: PROGRAM")
    if argv[0] in ("-h", "--help"):
        parser.print_help()
        parser.exit(0)
    if argv[0].startswith("-"):
        parser.error(f"the PROGRAM comes first, then its options: got {argv[0]!r}")


def _cmd_run(argv: list[str]) -> int:
    from .runner import load_tool, run_tool

    _program_first(run_parser, argv)
    if _object_file(argv):
        from .objcli import run

        return run(argv)
    tool = load_tool(argv[0])
    return run_tool(tool, argv[1:], prog=f"pybpf run {argv[0]}")


def _object_file(argv: list[str]) -> bool:
    """A compiled object (FILE.bpf.o) among the arguments: handled by pybpf.objcli."""
    from .objcli import is_object_file

    return any(not a.startswith("-") and is_object_file(a) for a in argv[:1])


def explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybpf explain", description="Show every CO-RE relocation of a program against "
        "a kernel's BTF: instruction, kind, local type and field, access string, and the "
        "local and target values (offset, size, existence...).",
    )  # fmt: skip
    parser.add_argument("program", metavar="PROGRAM",
                        help="a shipped program's name or a program file")  # fmt: skip
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    parser.add_argument("--json", action="store_true", help="one JSON array of relocations")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="also the candidates considered and why each was rejected",
    )  # fmt: skip
    return parser


def _cmd_explain(argv: list[str]) -> int:
    if _object_file([a for a in argv if not a.startswith("-")]):
        from .objcli import explain

        return explain(argv)
    from .object import prepare
    from .runner import load_btf, load_tool, tool_parser

    parser = explain_parser()
    args = parser.parse_args(argv)
    tool = load_tool(args.program)
    tool_args = tool_parser(tool, args.program).parse_args([])
    tool.check_arguments(parser, tool_args)
    prepared = prepare(tool.build(tool_args), load_btf(args.btf))
    write_relocations(prepared.relocations, sys.stdout, args.verbose, args.json)
    return 0


def write_relocations(relos: list, out: TextIO, verbose: bool, as_json: bool) -> None:
    """``explain``'s output, for a program or a compiled object: a table (``-v``: with the
    candidates) or one JSON array."""
    if as_json:
        json.dump([r.as_dict(verbose) for r in relos], out, indent=1)
        out.write("\n")
        return
    header = ("PROGRAM", "INSN", "KIND", "TYPE", "FIELD", "ACCESS", "LOCAL", "TARGET")
    rows = [header] + [
        (r.program, str(r.insn), r.kind, r.type, r.field, r.access, str(r.local),
         "-" if r.target is None else str(r.target))
        for r in relos
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if verbose and n:
            _explain_candidates(relos[n - 1], out)


def _explain_candidates(relo: object, out: TextIO) -> None:
    """``explain -v``: the matched target access, then every candidate and its fate."""
    if getattr(relo, "reason", ""):
        out.write(f"    poisoned: {relo.reason}\n")  # type: ignore[attr-defined]
    if getattr(relo, "spec", ""):
        out.write(f"    target: {relo.spec}\n")  # type: ignore[attr-defined]
    for c in getattr(relo, "candidates", ()):
        verdict = "matched" if c.matched else "rejected"
        where = "" if c.btf_name == "vmlinux" else f" ({c.btf_name})"
        out.write(
            f"    candidate [{c.type_id}] {c.kind.lower()} {c.type_name}{where}: {verdict}"
            + ("" if c.matched else f": {c.reason}") + "\n"
        )


def _cmd_asm(argv: list[str]) -> int:
    from .asm_text import main as asm_main

    return asm_main(argv)


def _cmd_disasm(argv: list[str]) -> int:
    from .disasm import main as disasm_main

    return disasm_main(argv)


def dump_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybpf dump",
        description="Show a program as it would be loaded against a kernel: CO-RE relocated, "
        "helpers numbered and named, maps named, relocations annotated.",
    )
    parser.add_argument("program", metavar="PROGRAM",
                        help="a shipped program's name or a program file")  # fmt: skip
    parser.add_argument("--btf", metavar="FILE", help="target BTF (default: running kernel)")
    return parser


def _cmd_dump(argv: list[str]) -> int:
    if _object_file([a for a in argv if not a.startswith("-")]):
        from .objcli import dump

        return dump(argv)
    from .disasm import btf_namers, disassemble
    from .object import prepare
    from .runner import load_btf, load_tool, tool_parser
    from .tool import plural

    parser = dump_parser()
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
        sys.stdout.write(f'; {prog.name}: SEC("{prog.section}"), {plural(slots, "instruction")}\n')
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


def export_parser() -> argparse.ArgumentParser:
    """``pybpf export``'s own usage; a program's are ``pybpf export PROGRAM --help``."""
    from .exporter import DEFAULT_LISTEN

    parser = argparse.ArgumentParser(
        prog="pybpf export",
        usage="pybpf export [-h] PROGRAM [--listen HOST:PORT] [--bpf-stats] [--btf FILE] [-v] "
        "[PROGRAM ARGS...]",
        description="Load a program and serve its in-kernel aggregates at "
        f"http://{DEFAULT_LISTEN}/metrics for Prometheus, until Ctrl-C or SIGTERM. "
        "`pybpf export PROGRAM --help` lists a program's options (runqlat: -P, -L, --pidnss, "
        "--max-series...).",
    )
    parser.add_argument("program", metavar="PROGRAM",
                        help="a program with metrics (runqlat) or a program file")  # fmt: skip
    group = parser.add_argument_group("options of every exported program")
    group.add_argument("--listen", metavar="HOST:PORT",
                       help=f"address to serve /metrics on (default {DEFAULT_LISTEN})")  # fmt: skip
    group.add_argument("--bpf-stats", action="store_true",
                       help="count the BPF programs' runs and run time: pybpf_program_* "
                       "metrics")  # fmt: skip
    group.add_argument("--btf", metavar="FILE", help="target BTF when the kernel has no "
                       "/sys/kernel/btf/vmlinux")  # fmt: skip
    group.add_argument("-v", "--verbose", action="store_true",
                       help="print CO-RE relocations and load details to stderr")  # fmt: skip
    return parser


def _cmd_export(argv: list[str]) -> int:
    from .exporter import serve

    _program_first(export_parser, argv)
    return serve(argv)


def list_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="pybpf list",
        description="List the programs that ship with pybpf, one per line: name and what it "
        "does (`pybpf run NAME --help` for its options).",
    )


def _cmd_list(argv: list[str]) -> int:
    from .runner import load_tool, shipped_programs

    list_parser().parse_args(argv)
    for name in shipped_programs():
        sys.stdout.write(f"{name:<16} {load_tool(name).description}\n")
    return 0


def _cmd_btf(argv: list[str]) -> int:
    from .btf_dump import main as btf_main

    return btf_main(argv)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of every command line form, by its words (``"run runqlat"``): what
    ``--help`` prints for each, and what the README's usage must list."""
    from .asm_text import parser as asm_parser
    from .btf_dump import parser as btf_parser
    from .disasm import parser as disasm_parser
    from .exporter import export_parser as tool_export_parser
    from .runner import load_tool, shipped_programs, tool_parser

    parsers = {"run": run_parser(), "export": export_parser()}
    for name in shipped_programs():
        tool = load_tool(name)
        parsers[f"run {name}"] = tool_parser(tool, f"pybpf run {name}")
        if tool.exportable:
            parsers[f"export {name}"] = tool_export_parser(tool, name)
    parsers.update({
        "explain": explain_parser(), "dump": dump_parser(), "list": list_parser(),
        "asm": asm_parser(), "disasm": disasm_parser(),
        "btf dump": btf_parser("dump"), "btf show": btf_parser("show"),
    })  # fmt: skip
    return parsers


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
