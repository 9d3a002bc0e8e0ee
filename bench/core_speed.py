"""How long CO-RE relocation of all of runqslower takes once the kernel BTF is indexed.

Each round parses and indexes the BTF afresh (not timed: ``BTF.from_bytes`` builds
the type index), then times ``prepare()`` — every CO-RE relocation (candidate
search by name, matching, patching), helper numbers and attach ids — and, apart,
the CO-RE relocations alone (``CoreEngine.relocate`` for each record), first
with only the type index (what ``pybpf run`` has: names are looked up lazily in
the string section), then with BTF's full name index built (``BTF.name_index()``,
not timed: ~100 ms, too slow for the run path, what "once BTF is indexed" means).

    python bench/core_speed.py [ROUNDS] [--btf FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pybpf.btf import BTF  # noqa: E402
from pybpf.cdecl import encode_local_btf  # noqa: E402
from pybpf.core import CoreEngine  # noqa: E402
from pybpf.object import _core_roots, prepare  # noqa: E402
from pybpf.programs import runqslower  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rounds", nargs="?", type=int, default=30)
    ap.add_argument("--btf", default="/sys/kernel/btf/vmlinux")
    args = ap.parse_args()
    raw = BTF.from_file(args.btf)._data
    spec = runqslower.build_object()
    relos = [r for p in prepare(spec, BTF.from_bytes(raw)).programs for r in p.core_relos]
    data, _ = encode_local_btf(_core_roots(spec.programs))
    whole, core_only, indexed = [], [], []
    for _ in range(args.rounds):
        btf = BTF.from_bytes(raw)
        t = time.perf_counter()
        prepare(spec, btf)
        whole.append((time.perf_counter() - t) * 1e3)
        btf = BTF.from_bytes(raw)
        engine = CoreEngine(BTF.from_bytes(data), btf)
        t = time.perf_counter()
        for relo in relos:
            engine.relocate(relo)
        core_only.append((time.perf_counter() - t) * 1e3)
        btf = BTF.from_bytes(raw)
        btf.name_index()
        engine = CoreEngine(BTF.from_bytes(data), btf)
        t = time.perf_counter()
        for relo in relos:
            engine.relocate(relo)
        indexed.append((time.perf_counter() - t) * 1e3)
    print(f"{len(relos)} CO-RE relocations, {args.rounds} rounds, BTF {args.btf}")
    for name, xs in (("prepare() (CO-RE + helpers + attach ids)", whole),
                     ("CO-RE relocations, lazy name look-ups", core_only),
                     ("CO-RE relocations, BTF name index built", indexed)):  # fmt: skip
        print(f"{name:42} median {statistics.median(xs):6.2f} ms  "
              f"(min {min(xs):.2f}, max {max(xs):.2f})")


if __name__ == "__main__":
    main()
