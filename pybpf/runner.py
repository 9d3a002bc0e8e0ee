"""Run a :class:`~pybpf.tool.Tool`: load, attach, print events, clean up.

Exit paths are the point of this module.  Ctrl-C and SIGTERM both end the
poll loop; the rows the kernel already wrote into the perf buffer are then
drained and printed, stdout is flushed, and the object is closed, which
frees every program, link and map of ours (nothing is pinned).  The C
runqslower dies on SIGTERM with up to 4 KiB of rows in its stdio buffer.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, Optional, TextIO

from .btf import BTF
from .errors import BTFError, PyBPFError, VerifierError
from .object import PreparedObject, prepare
from .tool import Tool

# Readers drain on this timer even without a wakeup: programs output without waking the reader
# per event (ring buffer BPF_RB_NO_WAKEUP, perf watermark), so this bounds the display delay.
POLL_TIMEOUT_MS = 50
PERF_BUFFER_PAGES = 64  # per CPU, as libbpf-tools' runqslower

# Capability bits (include/uapi/linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class Terminated(Exception):
    """SIGTERM arrived: end the poll loop like Ctrl-C does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def load_tool(name: str) -> Tool:
    """A shipped program by name (``runqslower``) or a user's program file."""
    module: ModuleType
    if name.endswith(".py") or os.sep in name or (
        os.path.lexists(name) and name not in shipped_programs()
    ):
        module = _from_file(name)
    else:
        if not name.isidentifier():
            raise PyBPFError(f"no program named {name!r} (try: pybpf list)")
        try:
            module = importlib.import_module(f"pybpf.programs.{name}")
        except ModuleNotFoundError as err:
            if err.name not in (f"pybpf.programs.{name}", "pybpf.programs"):
                raise
            module = _from_source_tree(name)
    tool = getattr(module, "TOOL", None)
    if not isinstance(tool, Tool):
        raise PyBPFError(f"{name}: the program file defines no TOOL (a pybpf.tool.Tool)")
    return tool


def _from_file(name: str) -> ModuleType:
    """A user's program file: a Python module (``.py``) that defines ``TOOL``."""
    from importlib.util import module_from_spec, spec_from_file_location  # only then
    from pathlib import Path

    path = Path(name)
    if path.is_dir():
        raise PyBPFError(f"{name} is a directory, not a program file (a .py module that "
                         "defines TOOL = <a pybpf.tool.Tool>)")  # fmt: skip
    if not path.exists():
        raise PyBPFError(f"no program file {name!r}")
    if path.suffix != ".py":
        raise PyBPFError(f"{name} is not a pybpf program: a program file is a Python module "
                         "(.py) that defines TOOL = <a pybpf.tool.Tool>; shipped programs: "
                         + ", ".join(shipped_programs()))  # fmt: skip
    spec = spec_from_file_location(f"pybpf_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PyBPFError(f"cannot import {name!r}")
    module = module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise PyBPFError(f"{name}:{err.lineno}: not Python: {err.msg}") from None
    except OSError as err:
        raise PyBPFError(f"cannot read {name}: {err.strerror}") from None
    return module


def _from_source_tree(name: str) -> ModuleType:
    """In a source checkout (not installed), programs/ sits beside pybpf/."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "programs" / f"{name}.py"
    if not path.is_file():
        raise PyBPFError(f"no program named {name!r} (try: pybpf list)")
    if "pybpf.programs" not in sys.modules:  # the package, for the programs' own imports
        package = importlib.util.spec_from_file_location(
            "pybpf.programs", path.parent / "__init__.py", submodule_search_locations=[]
        )
        assert package is not None and package.loader is not None
        sys.modules["pybpf.programs"] = importlib.util.module_from_spec(package)
        package.loader.exec_module(sys.modules["pybpf.programs"])
        sys.modules["pybpf.programs"].__path__ = [str(path.parent)]
    spec = importlib.util.spec_from_file_location(f"pybpf.programs.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shipped_programs() -> list[str]:
    from pathlib import Path

    try:
        import pybpf.programs as pkg

        where = Path(pkg.__file__).parent
    except ImportError:
        where = Path(__file__).resolve().parent.parent / "programs"
    return sorted(p.stem for p in where.glob("*.py") if not p.stem.startswith("_"))


KERNEL_BTF = "/sys/kernel/btf/vmlinux"


def load_btf(path: Optional[str]) -> BTF:
    """``--btf FILE``, else the running kernel's BTF (5.4+, CONFIG_DEBUG_INFO_BTF)."""
    if path:
        return BTF.from_file(path)
    if not os.path.exists(KERNEL_BTF):
        raise BTFError(
            f"{KERNEL_BTF} not found: this kernel was built without BTF "
            "(CONFIG_DEBUG_INFO_BTF=y, Linux 5.4+); give pybpf this kernel's BTF with "
            "--btf FILE (BTFHub publishes BTF for many distribution kernels)"
        )
    return BTF.kernel(KERNEL_BTF)


def check_btf_is_running_kernel(btf: BTF, path: str) -> None:
    """``run --btf FILE`` is for kernels without ``/sys/kernel/btf/vmlinux`` (as libbpf's
    ``btf_custom_path``): where the kernel has its own BTF, another kernel's would load
    programs with wrong offsets and attach ids, so refuse it."""
    if not os.path.exists(KERNEL_BTF):
        return
    with open(KERNEL_BTF, "rb") as f:
        running = f.read()
    if running != btf.raw_bytes():
        raise PyBPFError(
            f"--btf {path} is not the running kernel's BTF ({KERNEL_BTF} differs): "
            "programs relocated for another kernel would read wrong fields. Use it with "
            "`pybpf explain` or `pybpf dump`, or omit --btf"
        )


def check_privileges() -> None:
    """Fail early, in one line, without root or CAP_BPF + CAP_PERFMON (5.8)."""
    if os.geteuid() == 0:
        return
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        caps = 0
    if caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1):
        return
    raise PyBPFError("loading BPF programs needs root, or CAP_BPF and CAP_PERFMON")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with the terminal width found without ``shutil``: argparse
    builds a formatter for every ``add_argument`` and the default one imports ``shutil``
    (which imports ``bz2``, ``lzma``, ``fnmatch``) for ``get_terminal_size``, ~2 ms of every
    start.  Same width rule: ``$COLUMNS``, else the terminal's, else 80; minus 2."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:  # fmt: skip
        if width is None:
            width = terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def tool_parser(tool: Tool, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=tool.description,
                                     formatter_class=HelpFormatter)
    add_load_arguments(parser)
    tool.add_arguments(parser)
    return parser


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """``--btf`` and ``-v``, which :func:`prepare_tool` and :func:`load_and_attach` read."""
    parser.add_argument("--btf", metavar="FILE", help="target BTF (raw or .xz); default: the "
                        "running kernel's /sys/kernel/btf/vmlinux")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print CO-RE relocations and load details to stderr")  # fmt: skip


def run_tool(tool: Tool, argv: list[str], prog: str, out: TextIO = sys.stdout,
             err: TextIO = sys.stderr) -> int:  # fmt: skip
    parser = tool_parser(tool, prog)
    args = parser.parse_args(argv)
    tool.check_arguments(parser, args)
    prepared = prepare_tool(tool, args, err)
    # Imported here: the kernel-facing layer is not needed for --help or explain.
    from .loader import LoadedObject

    with stop_signals():
        with LoadedObject(prepared, tool.rodata(args)) as obj:
            try:
                load_and_attach(obj, args, err)
            except VerifierError as exc:
                raise _with_source_line(tool, obj, exc) from None
            buffer = open_events(obj, tool, out, err) if tool.events_map else None
            lost = _LostCounter(obj, tool, err) if buffer is not None else None
            try:
                interval = tool.interval(args)
                deadline = time.monotonic() + interval if interval else None
                try:  # from the header on, Ctrl-C or SIGTERM is the normal way to stop
                    tool.header(args, out)
                    out.flush()
                    while True:
                        if buffer is not None:
                            if buffer.poll(POLL_TIMEOUT_MS):
                                out.flush()
                            if lost is not None:
                                lost.check()
                        elif deadline is None:
                            signal.pause()
                            continue
                        else:
                            time.sleep(max(0.0, deadline - time.monotonic()))
                        if deadline is not None and time.monotonic() >= deadline:
                            more = tool.on_interval(obj, out)
                            out.flush()
                            if not more:
                                break
                            deadline += interval  # type: ignore[operator]
                except (KeyboardInterrupt, Terminated):
                    # Ignore further signals while we flush what was received.
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    if buffer is not None:
                        buffer.consume()
                    if lost is not None:
                        lost.check()
                    tool.on_stop(obj, out)
                    out.flush()
            finally:
                if buffer is not None:
                    buffer.close()
    return 0


def _with_source_line(tool: Tool, obj: Any, exc: VerifierError) -> VerifierError:
    """A tool that knows where its instructions came from (``pybpf.lang``) names the
    source line of the instruction the verifier refused."""
    explain = getattr(tool, "explain_rejection", None)
    failed = [p.name for p in obj.prepared.programs if p.name not in obj.programs]
    where = explain(failed[0], exc.log) if explain is not None and failed else None
    if not where:
        return exc
    return VerifierError(f"{where}: {exc}", exc.errno, exc.log)


def prepare_tool(tool: Tool, args: argparse.Namespace, err: TextIO) -> PreparedObject:
    """Build the tool's object and relocate it for the target kernel (``--btf FILE`` only
    when it is the running kernel's), then check privileges: everything before a bpf()."""
    btf = load_btf(args.btf)
    if args.btf:
        check_btf_is_running_kernel(btf, args.btf)
    # For tools that probe the running kernel while building (runqslower: ring buffer?
    # tp_btf?); target_btf only when it is the running kernel's own.
    args.probe_kernel = True
    args.target_btf = None if args.btf else btf
    prepared = prepare(tool.build(args), btf)
    if args.verbose:
        print_relocations(prepared, err)
    check_privileges()
    return prepared


def load_and_attach(obj: Any, args: argparse.Namespace, err: TextIO) -> None:
    """Load every map and program (the verifier's whole log on stderr with ``-v``), then
    attach the programs."""
    try:
        obj.load()
    except VerifierError as exc:
        if args.verbose:  # the CLI prints the tail; -v asks for all of it
            err.write(f"--- verifier log ---\n{exc.log.rstrip()}\n--- end ---\n")
        raise
    for warning in obj.warnings:
        err.write(f"pybpf: warning: {warning}\n")
    obj.attach()


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt, until the block ends.
    Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler of its own."""
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def open_events(obj: object, tool: Tool, out: TextIO, err: TextIO) -> object:
    """The reader for the tool's events map: a BPF ring buffer (5.8) or perf buffers.

    Both hand over whole batches (``tool.on_events(cpu, records, out)`` when the tool has it)
    so that a tool can format a batch and write it at once."""
    from .uapi import BPF_MAP_TYPE_RINGBUF

    events = obj.maps[tool.events_map]  # type: ignore[attr-defined]
    on_events = tool.on_events
    if events.spec.map_type == BPF_MAP_TYPE_RINGBUF:
        from .ringbuf import RingBuffer

        # One ring for all CPUs: the CPU of a record is unknown (-1).
        return RingBuffer(events.fd, on_batch=lambda records: on_events(-1, records, out))
    import mmap

    from .perf import PerfBuffer

    # A tool may ask for bigger rings (runqslower does at low thresholds).
    pages = tool.perf_buffer_pages or PERF_BUFFER_PAGES
    return PerfBuffer(
        events.fd,
        page_count=pages,
        on_batch=lambda cpu, records: on_events(cpu, records, out),
        on_lost=lambda cpu, count: tool.on_lost(cpu, count, err),
        # Wake the reader when a ring is half full, not per sample; the poll timer does the rest.
        wakeup_bytes=pages * mmap.PAGESIZE // 2,
    )


class _LostCounter:
    """Per-CPU counts of outputs that failed in BPF (the tool's ``lost_map``: a per-CPU array
    whose element 0 is a u64 counter).  Reported through ``tool.on_lost`` as they grow —
    for the ring buffer, which keeps no loss records of its own."""

    def __init__(self, obj: object, tool: Tool, err: TextIO) -> None:
        from .uapi import BPF_MAP_TYPE_RINGBUF

        self.map = None
        name = tool.lost_map
        events = obj.maps[tool.events_map]  # type: ignore[attr-defined]
        # Perf buffers report their own losses (PERF_RECORD_LOST): count those only once.
        if name and events.spec.map_type == BPF_MAP_TYPE_RINGBUF:
            self.map = obj.maps[name]  # type: ignore[attr-defined]
        self.tool, self.err = tool, err
        self.seen: list[int] = []

    def check(self) -> None:
        if self.map is None:
            return
        raw = self.map.lookup(b"\0\0\0\0")
        if raw is None:
            return
        counts = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
        if not self.seen:
            self.seen = [0] * len(counts)
        for cpu, (now, before) in enumerate(zip(counts, self.seen)):
            if now > before:
                self.tool.on_lost(cpu, now - before, self.err)
        self.seen = counts
        self.err.flush()


def print_relocations(prepared: PreparedObject, out: TextIO) -> None:
    for r in prepared.relocations:
        target = "missing" if r.target is None else r.target
        out.write(
            f"{r.program:<18} insn {r.insn:>3}  {r.kind:<12} {r.type}.{r.field} "
            f"[{r.access}]  {r.local} -> {target}\n"
        )
