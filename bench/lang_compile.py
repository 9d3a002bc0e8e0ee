"""Compile time of runqslower written in the language (programs/runqslower_lang.py).

Measures ``pybpf.lang.build`` of its three programs against the running kernel's BTF,
which is on ``pybpf run``'s start-up path.  Two figures: with the BTF's name look-ups
already made (what a warm start with the on-disk BTF cache, PYBPF_BTF_CACHE=1, has: the
compiler's own work) and from a fresh BTF object (every look-up scans the string table).

    .venv/bin/python bench/lang_compile.py [--rounds 20]

Times are CPU times of this process (time.process_time): the figure does not move with
what else the machine runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pybpf.btf import BTF
    from pybpf.runner import _from_source_tree

    module = _from_source_tree("runqslower_lang")
    programs = [module.sched_wakeup, module.sched_wakeup_new, module.sched_switch]
    build = module.build

    cold = []
    for _ in range(max(3, args.rounds // 5)):
        btf = BTF.kernel()
        t = time.process_time()
        build("runqslower", programs, btf)
        cold.append((time.process_time() - t) * 1e3)
    btf = BTF.kernel()
    btf._find_memo = {}  # as the BTF cache restores it
    build("runqslower", programs, btf)
    warm = []
    for _ in range(args.rounds):
        t = time.process_time()
        compiled = build("runqslower", programs, btf)
        warm.append((time.process_time() - t) * 1e3)
    insns = {p.name: len(p.insns) for p in compiled.spec.programs}
    print(f"instructions: {insns}")
    print(f"compile, look-ups cached: median {statistics.median(warm):.1f} ms, "
          f"min {min(warm):.1f} ms ({args.rounds} rounds)")
    print(f"compile, fresh BTF:       median {statistics.median(cold):.1f} ms, "
          f"min {min(cold):.1f} ms")


if __name__ == "__main__":
    main()
