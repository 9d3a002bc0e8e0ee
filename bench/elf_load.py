"""Compiled objects: open + relocate + load with pybpf, against libbpf doing the same.

For every libbpf-tools object (extracted from Debian's binaries, tests/bpf_objects.py),
the programs this kernel loads are loaded in-process, N rounds each (default 5), by:

- pybpf: ``BPFObject.open`` + ``load`` (ELF, BTF, CO-RE against the kernel's BTF, maps,
  programs), then ``close``;
- libbpf: ``bpf_object__open_file`` + ``bpf_object__load`` + ``close`` (Debian's
  libbpf.so.1 via ctypes: the C tools' start-up minus their own argument parsing).

Medians in ms and the ratio pybpf/libbpf; both read /sys/kernel/btf/vmlinux each time.
Also the ELF reading alone, pybpf.elf.reader against pyelftools (sections, symbols,
relocations of all objects).  Root needed.

    .venv/bin/python bench/elf_load.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import bpf_objects  # noqa: E402
import libbpf_oracle  # noqa: E402
from elf_matrix import _open_sized, runtime_sizes  # noqa: E402

from pybpf.bpfobject import BPFObject  # noqa: E402
from pybpf.errors import PyBPFError  # noqa: E402


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def loadable(path: str, sizes: dict) -> list[str]:
    with BPFObject.open(path) as obj:
        names = [p.name for p in obj.elf.spec.programs]
    ok = []
    for name in names:
        with libbpf_oracle.LibbpfObject(path, [name], sizes) as lo:
            if lo.error == 0:
                ok.append(name)
    return ok


def reader_bench(paths: list[str], rounds: int) -> tuple[float, float]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    from pybpf.elf.reader import ElfFile

    blobs = [open(p, "rb").read() for p in paths]

    def ours() -> None:
        for data in blobs:
            elf = ElfFile(data)
            for rel in elf.relocation_sections().values():
                elf.relocations(rel)
            for s in elf.sections:
                s.data  # noqa: B018

    def theirs() -> None:
        import io

        for data in blobs:
            elf = ELFFile(io.BytesIO(data))
            for s in elf.iter_sections():
                s.data()
                if isinstance(s, RelocationSection):
                    list(s.iter_relocations())
            list(elf.get_section_by_name(".symtab").iter_symbols())

    return median_ms(ours, rounds), median_ms(theirs, rounds)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    objs = bpf_objects.objects()
    rows = []
    for name, path in sorted(objs.items()):
        with BPFObject.open(path) as probe:
            sizes = runtime_sizes(probe)
        progs = loadable(path, sizes)
        if not progs:
            continue

        def ours(path: str = path, sizes: dict = sizes, progs: list = progs) -> None:
            with _open_sized(path, sizes) as obj:
                obj.load(programs=progs)

        def theirs(path: str = path, sizes: dict = sizes, progs: list = progs) -> None:
            with libbpf_oracle.LibbpfObject(path, progs, sizes) as lo:
                assert lo.error == 0

        try:
            ours()
        except PyBPFError as err:
            print(f"{name}: {err}")
            continue
        a, b = median_ms(ours, rounds), median_ms(theirs, rounds)
        rows.append((name, len(progs), a, b))
        print(f"{name:<16} {len(progs):>3} programs  pybpf {a:7.1f} ms  libbpf {b:7.1f} ms  "
              f"ratio {a / b:4.1f}", flush=True)
    ratios = [a / b for _, _, a, b in rows]
    print(f"\n{len(rows)} objects: median ratio {statistics.median(ratios):.1f}, "
          f"min {min(ratios):.1f}, max {max(ratios):.1f}; pybpf total "
          f"{sum(r[2] for r in rows):.0f} ms, libbpf {sum(r[3] for r in rows):.0f} ms")
    ours_ms, theirs_ms = reader_bench(list(objs.values()), max(rounds, 5))
    print(f"ELF reading of {len(objs)} objects: pybpf.elf.reader {ours_ms:.1f} ms, "
          f"pyelftools {theirs_ms:.1f} ms ({theirs_ms / ours_ms:.0f}x)")


if __name__ == "__main__":
    main()
