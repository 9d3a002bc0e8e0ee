"""python -m vmtest: boot a Debian kernel under QEMU and run a command in it.

    python -m vmtest run 6.1 -- uname -r
    python -m vmtest run 5.10 --share "$PWD" -- .venv/bin/python -m pytest -q tests/test_x.py
    python -m vmtest prepare 5.10 6.1 6.1-rt 6.12
    python -m vmtest list
    python -m vmtest matrix [KERNEL...]      the kernel-facing tests in each kernel
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import kernels
from .kernels import KERNELS, VMError


def _write(stream):
    def sink(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.flush()

    return sink


def cmd_run(args: argparse.Namespace) -> int:
    from .vm import run

    if not args.command:
        raise VMError("run: give the command after --")
    image = kernels.prepare(args.kernel, log=lambda m: print(m, file=sys.stderr))
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise VMError(f"-e {item}: write VAR=VALUE")
        env[key] = value
    result = run(image, args.command, shares=args.share, env=env, timeout=args.timeout,
                 memory=args.memory, cpus=args.cpus, append=args.append,
                 stdout=_write(sys.stdout), stderr=_write(sys.stderr), keep=args.keep)  # fmt: skip
    for note in result.notes:
        print(f"vmtest: {note}", file=sys.stderr)
    if args.verbose:
        sys.stderr.write(result.console)
        boot = f"{result.boot_seconds:.1f} s" if result.boot_seconds is not None else "?"
        print(f"vmtest: {image.release} ({image.package} {image.version}): command started at "
              f"guest uptime {boot}, {result.seconds:.1f} s in all, exit {result.returncode}",
              file=sys.stderr)  # fmt: skip
    return result.returncode


def cmd_prepare(args: argparse.Namespace) -> int:
    for alias in args.kernels or list(KERNELS):
        image = kernels.prepare(alias, log=lambda m: print(m, file=sys.stderr))
        print(f"{alias}\t{image.release}\t{image.package}={image.version}\t{image.directory}")
    return 0


def cmd_list(_args: argparse.Namespace) -> int:
    for alias, kernel in KERNELS.items():
        image = kernels.cached(alias)
        where = f"cached: {image.release} ({image.version})" if image else "not cached"
        print(f"{alias:7} {kernel.package:45} {where}")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from .matrix import main as matrix_main

    return matrix_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vmtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a command under a kernel")
    r.add_argument("kernel", help=f"{', '.join(KERNELS)} or a linux-image .deb")
    r.add_argument("--share", action="append", default=[], metavar="DIR",
                   help="host directory mounted read-write at the same path (repeatable)")
    r.add_argument("--timeout", type=float, default=600, help="seconds (exit 124 after)")
    r.add_argument("--memory", default="2G")
    r.add_argument("--cpus", type=int, default=None)
    r.add_argument("--append", default="", help="extra kernel command line")
    r.add_argument("-e", dest="env", action="append", default=[], metavar="VAR=VALUE")
    r.add_argument("-v", "--verbose", action="store_true", help="console log and timings")
    r.add_argument("--keep", action="store_true", help="keep the run directory")
    r.set_defaults(func=cmd_run)
    pr = sub.add_parser("prepare", help="download and build the boot cache")
    pr.add_argument("kernels", nargs="*")
    pr.set_defaults(func=cmd_prepare)
    sub.add_parser("list", help="kernels and what is cached").set_defaults(func=cmd_list)
    m = sub.add_parser("matrix", help="the kernel-facing tests in each kernel")
    m.add_argument("kernels", nargs="*", help="default: all")
    m.add_argument("--tests", nargs="*", default=None, help="pytest arguments (default: the set)")
    m.add_argument("--kernels-md", default=None, metavar="FILE",
                   help="write the kernel x feature table here (docs/kernels.md)")
    m.add_argument("--timeout", type=float, default=1200, help="seconds per kernel")
    m.set_defaults(func=cmd_matrix)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after -- is the guest's command, options included
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    args = parser().parse_args(argv)
    args.command = command
    try:
        return args.func(args)
    except VMError as err:
        print(f"vmtest: error: {err}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
