"""Fixed-width integer conversions shared by the instruction set, BTF and CO-RE code."""

from __future__ import annotations


def s32(value: int) -> int:
    """The low 32 bits of ``value`` as a signed (two's complement) integer."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
