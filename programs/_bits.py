"""BPF-side bit arithmetic, as libbpf-tools' ``bits.bpf.h``.

The ISA has no count-leading-zeros instruction: ``log2l`` is a binary search of five
compare-and-shift steps on the low word, after picking the high word when it is non-zero.
"""

from __future__ import annotations

from pybpf.asm import Asm, Reg


def log2l(a: Asm, dst: Reg, v: Reg, tmp: Reg, prefix: str = "log2") -> None:
    """``dst = log2l(v)``: floor(log2(v)) for a u64 ``v``, and 0 for ``v`` of 0 or 1, as
    bits.bpf.h's ``log2l()``.  Clobbers ``v`` and ``tmp``; ``prefix`` names its labels."""
    a.mov(dst, 0)
    a.mov(tmp, v).rsh(tmp, 32)  #               u32 hi = v >> 32;
    a.jeq(tmp, 0, f"{prefix}_low")  #           if (hi) return log2(hi) + 32;
    a.mov(v, tmp).mov(dst, 32)
    a.label(f"{prefix}_low")  #                 log2(u32 v):
    for shift in (16, 8, 4, 2, 1):  #           shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
        a.jle(v, (1 << shift) - 1, f"{prefix}_{shift}")  # ... down to r |= (v >> 1);
        a.rsh(v, shift).add(dst, shift)
        a.label(f"{prefix}_{shift}")
