"""Bounded fuzzing of the BTF parser, dumper and viewer with mutated and truncated real BTF.

Seeds are small re-encoded slices of real kernel BTF (every kind the kernels have, DECL_TAG,
TYPE_TAG, ENUM64 and DATASEC included) and the encoder's all-kinds blob.  Mutations: byte
flips, u32 words set to interesting values (kinds, huge vlens, ids, offsets), truncation,
header fields.  Whatever the input, only pybpf's BTFError may come out; each example must
finish quickly (hypothesis ``deadline``) and allocate little (tracemalloc peak).
"""

from __future__ import annotations

import functools
import lzma
import struct
import tracemalloc
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_btf import build_all_kinds

from pybpf.btf import (
    BTF,
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_ENUM64,
    BTF_KIND_FUNC,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_UNION,
)
from pybpf.btf_dump import dump_raw
from pybpf.btf_encoder import BTFBuilder
from pybpf.btf_show import show
from pybpf.errors import BTFError

ROOT = Path(__file__).resolve().parent.parent
MAX_TYPES = 250
INTERESTING = [0, 1, 2, 3, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               *[k << 24 for k in range(0, 32)], 0x8000FFFF | (4 << 24), 0x0400FFFF,
               0x1300FFFF, 0x0D00FFFF]


def _closure(btf: BTF, seeds: list[int]) -> bytes:
    """Re-encode the types reachable from ``seeds`` (at most MAX_TYPES; references beyond
    that become void), renumbered from 1."""
    order: list[int] = []
    seen: set[int] = set()
    todo = list(seeds)
    while todo and len(order) < MAX_TYPES:
        tid = todo.pop(0)
        if tid == 0 or tid in seen:
            continue
        seen.add(tid)
        order.append(tid)
        t = btf.type(tid)
        todo += [t.type, t.elem_type, t.index_type, *(m.type for m in t.members),
                 *(p.type for p in t.params), *(s.type for s in t.secinfos)]
    new = {old: i + 1 for i, old in enumerate(order)}

    def r(x: int) -> int:
        return new.get(x, 0)

    b = BTFBuilder()
    for tid in order:
        t = btf.type(tid)
        b.add_type(t._replace(
            id=new[tid], type=r(t.type), elem_type=r(t.elem_type), index_type=r(t.index_type),
            members=tuple(m._replace(type=r(m.type)) for m in t.members),
            params=tuple(p._replace(type=r(p.type)) for p in t.params),
            secinfos=tuple(s._replace(type=r(s.type)) for s in t.secinfos)))
    return b.encode()


@functools.cache
def seeds() -> tuple[bytes, ...]:
    btf = BTF.from_bytes(lzma.decompress(
        (ROOT / "btf" / "firecracker-6.18.44-fc-v657.btf.xz").read_bytes()))
    out = [build_all_kinds()[0].encode(), build_all_kinds()[0].encode("big")]
    for kind in (BTF_KIND_DECL_TAG, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64, BTF_KIND_DATASEC,
                 BTF_KIND_FUNC, BTF_KIND_UNION):
        first = next(i for i in range(1, len(btf)) if btf.kind_of(i) == kind)
        out.append(_closure(btf, [first]))
    out.append(_closure(btf, btf.find("task_struct", BTF_KIND_STRUCT)))
    return tuple(out)


def exercise(data: bytes) -> None:
    """Every API on ``data``: only BTFError may escape."""
    try:
        btf = BTF.from_bytes(data)
    except BTFError:
        return
    for tid in range(len(btf) + 1):
        for op in (btf.type, btf.skip_mods_and_typedefs, btf.resolve_size, btf.name_of,
                   btf.kind_of):
            try:
                op(tid)
            except BTFError:
                pass
        try:
            if btf.kind_of(tid) in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                show(btf, str(tid))
        except BTFError:
            pass
    try:
        for _ in dump_raw(btf):
            pass
    except BTFError:
        pass
    for name in ("int", "task_struct", "", "x"):
        btf.find(name)
        btf.find_prefix(name[:2])
    try:
        btf.name_index()
    except BTFError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(seeds())))
    type_len = struct.unpack_from("<I", raw, 12)[0] if raw[0] == 0x9F else \
        struct.unpack_from(">I", raw, 12)[0]
    hot = min(len(raw), 24 + type_len)  # header and type records: where structure lives
    for _ in range(draw(st.integers(1, 6))):
        how = draw(st.sampled_from(["byte"] * 5 + ["word"] * 3 + ["header"]))
        if how == "byte":
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif how == "word":
            pos = draw(st.integers(24, max(24, hot - 4))) & ~3
            order = "<" if raw[0] == 0x9F else ">"
            struct.pack_into(order + "I", raw, pos, draw(st.sampled_from(INTERESTING)))
        else:
            pos = draw(st.sampled_from([4, 8, 12, 16, 20]))
            order = "<" if raw[0] == 0x9F else ">"
            struct.pack_into(order + "I", raw, pos, draw(st.sampled_from(INTERESTING)))
    if draw(st.integers(0, 3)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    return bytes(raw)


@settings(max_examples=1000, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_fuzz_only_btf_errors(data: bytes) -> None:
    tracemalloc.start()
    try:
        exercise(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(data) + (8 << 20), f"peak {peak} bytes for {len(data)} bytes"


def test_seeds_are_valid() -> None:
    for data in seeds():
        btf = BTF.from_bytes(data)
        assert len(btf) >= 2
        assert len(list(dump_raw(btf))) >= len(btf) - 1


def test_show_bounded_on_exponential_nesting() -> None:
    """Anonymous structs nested 2-wide 25 deep would print 2**25 lines; function pointers
    whose prototypes take 1000 such pointers, 30 deep, would be named in 1000**30 steps."""
    import time

    b = BTFBuilder()
    i = b.add_int("int", 4, signed=True)
    prev = b.add_struct("", 4, [("x", i, 0)])
    for _ in range(25):
        prev = b.add_struct("", 8, [("", prev, 0), ("", prev, 0)])
    top = b.add_struct("top", 8, [("", prev, 0)])
    fp = b.add_ptr(b.add_func_proto(i, [("", i)]))
    for _ in range(30):
        fp = b.add_ptr(b.add_func_proto(fp, [("", fp)] * 1000))
    holder = b.add_struct("holder", 8, [("f", fp, 0)])
    btf = BTF.from_bytes(b.encode())
    start = time.monotonic()
    try:
        show(btf, str(top))
        raise AssertionError("2**25 lines printed?")
    except BTFError as e:
        assert "lines" in str(e)
    try:
        show(btf, str(holder))
        raise AssertionError("1000**30 characters?")
    except BTFError as e:
        assert "longer than" in str(e)
    assert time.monotonic() - start < 10


def test_show_deeply_nested_bitfield_padding() -> None:
    """Found by bench/fuzz.py: padding bits between bitfields of an anonymous struct nested
    five deep made the type column's width negative (a format-spec ValueError, not a
    BTFError).  The column shrinks to nothing instead, as pahole's does."""
    b = BTFBuilder()
    i = b.add_int("int", 4, signed=True)
    inner = b.add_struct("", 4, [("a", i, 0, 3), ("b", i, 8, 4)])
    for _ in range(4):
        inner = b.add_struct("", 4, [("", inner, 0)])
    top = b.add_struct("deep", 4, [("", inner, 0)])
    text = show(BTF.from_bytes(b.encode()), str(top))
    assert "int :5;" in text.replace("\t", "").replace("  ", " ")
    assert "a:3;" in text.replace(" ", "") and "b:4;" in text.replace(" ", "")
