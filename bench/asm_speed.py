"""How long the instruction layer takes on runqslower's programs.

Four measures, each the median of N rounds (default 200), no root needed:

- build: ``RunqslowerTool.build()``: every DSL call of the three programs, label
  resolution (``Asm.assemble``) and the object spec, as ``pybpf run`` does it;
- encode: ``isa.encode`` of the three programs to the bytes BPF_PROG_LOAD takes;
- disasm: ``disasm.disassemble`` of those bytes (labels included);
- text asm: ``asm_text.assemble`` + ``to_bytes`` of that text back to the same bytes.

    .venv/bin/python bench/asm_speed.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pybpf import asm_text, disasm, isa  # noqa: E402
from pybpf.runner import load_tool, tool_parser  # noqa: E402


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    tool = load_tool("runqslower")
    args = tool_parser(tool, "runqslower").parse_args([])
    spec = tool.build(args)
    programs = [p.insns for p in spec.programs]
    slots = sum(i.slots for p in programs for i in p)
    # helper numbers are fixed so the bytes exist without a BTF (values do not matter here)
    numbered = [[i.with_(imm=1) if i.helper else i for i in p] for p in programs]
    raws = [isa.encode([i.with_(map=None) for i in p]) for p in numbered]
    texts = [disasm.disassemble(r) for r in raws]
    assert all(asm_text.to_bytes(asm_text.assemble(t)) == r for t, r in zip(texts, raws))

    results = {
        "build (DSL + labels)": median_ms(lambda: tool.build(args), rounds),
        "encode": median_ms(lambda: [isa.encode(p) for p in numbered], rounds),
        "disasm": median_ms(lambda: [disasm.disassemble(r) for r in raws], rounds),
        "text asm": median_ms(
            lambda: [asm_text.to_bytes(asm_text.assemble(t)) for t in texts], rounds
        ),
    }
    print(f"runqslower: {len(programs)} programs, {slots} slots; medians of {rounds} rounds")
    for name, ms in results.items():
        print(f"  {name:<22} {ms:7.3f} ms   ({ms * 1000 / slots:5.2f} us/slot)")


if __name__ == "__main__":
    main()
