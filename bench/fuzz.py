"""BTF and CO-RE fuzzing beyond CI: hundreds of thousands of hypothesis examples.

Four campaigns (the CI tests run a few hundred examples of the first two):

- ``parser``: mutated and truncated real BTF (``tests/test_btf_fuzz.py``'s strategy: byte flips,
  interesting u32 words, header fields, truncation) through every API (parse, type, resolve_size,
  names, the raw dump, the C viewer, name look-ups, the name index).  Finding: any exception
  other than ``BTFError``.
- ``roundtrip``: arbitrary types of every kind (``tests/btf_strategies.py``), encoded in both byte
  orders and parsed back.  Finding: a parsed type that differs from the one encoded (the
  reference is the generated list itself), a name look-up that misses, or a crash.
- ``core``: a generated target ``struct`` (ints of 1-8 bytes, signed or not, and char arrays,
  at random offsets with holes) and a local ``___flavor`` of it declaring a random subset of the
  members, others the target lacks, at its own natural offsets, in its own order.  Every member
  is relocated (``byte_off``, ``byte_sz``, ``field_exists``, ``signed``) by the CO-RE engine.
  Finding: a value other than the generated layout's (the reference), a missing member not
  poisoned, or a crash.
- ``core-mutated``: runqslower's own CO-RE accesses (``task_struct___x.__state``, ``pid``,
  ``tgid``, ``comm``...) relocated against mutated real BTF.  Finding: any exception other than
  ``BTFError``/``CORERelocationError``/``PyBPFError``.

    python bench/fuzz.py [--examples 110000] [--campaign NAME ...] [--seed N]

The examples are shared out over the campaigns (parser 50 %, roundtrip 5 %, core 30 %,
core-mutated 15 %).  Each campaign reports its examples, time and findings; hypothesis stops a
campaign at its first finding (after shrinking it) and prints the smallest input.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pybpf.btf import BTF  # noqa: E402
from pybpf.btf_encoder import BTFBuilder  # noqa: E402
from pybpf.errors import BTFError, PyBPFError  # noqa: E402

SHARES = {"parser": 0.50, "roundtrip": 0.05, "core": 0.30, "core-mutated": 0.15}


class Finding(AssertionError):
    """A wrong result (not a crash)."""


# --------------------------------------------------------------------------- parser
def parser_campaign() -> object:
    from test_btf_fuzz import exercise, mutated

    @given(mutated())
    def run(data: bytes) -> None:
        COUNT[0] += 1
        exercise(data)  # anything but BTFError propagates

    return run


# --------------------------------------------------------------------------- roundtrip
def roundtrip_campaign() -> object:
    from btf_strategies import any_types

    @given(any_types())
    def run(types: list) -> None:
        COUNT[0] += 1
        b = BTFBuilder()
        for t in types:
            b.add_type(t)
        for order in ("little", "big"):
            btf = BTF.from_bytes(b.encode(order))
            got = list(btf.iter_types())
            if got != types:
                bad = next(i for i, (g, w) in enumerate(zip(got, types)) if g != w)
                raise Finding(f"{order}: type {bad + 1} parsed as {got[bad]!r}, "
                              f"encoded {types[bad]!r}")
            for t in types:
                if "\0" not in t.name and t.id not in btf.find(t.name):
                    raise Finding(f"{order}: find({t.name!r}) misses type {t.id}")

    return run


# --------------------------------------------------------------------------- core
NAMES = [f"f{i}" for i in range(12)] + ["pid", "tgid", "comm", "__state", "state", "flags"]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple], list[tuple], str]:
    """(target members, local members, local flavor): each member is
    (name, kind, size, signed, offset) with kind "int" or "chars" (a char array)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=10, unique=True))
    target, off = [], 0
    for name in names:
        if draw(st.integers(0, 4)) == 0:
            kind, size, signed = "chars", draw(st.integers(1, 32)), False
            align = 1
        else:
            kind, size, signed = "int", draw(st.sampled_from([1, 2, 4, 8])), draw(st.booleans())
            align = size
        off += draw(st.integers(0, 3)) * align  # holes
        off = -(-off // align) * align
        target.append((name, kind, size, signed, off))
        off += size
    local_names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8, unique=True))
    local = []
    by_name = {m[0]: m for m in target}
    for name in local_names:
        t = by_name.get(name)
        if t is not None and draw(st.booleans()):  # same kind and shape as the target's
            local.append((name, t[1], t[2], t[3], 0))
        elif t is not None and t[1] == "int":  # an int of another size and sign: compatible
            local.append((name, "int", draw(st.sampled_from([1, 2, 4, 8])), draw(st.booleans()),
                          0))
        elif t is None:
            local.append((name, "int", draw(st.sampled_from([1, 2, 4, 8])), draw(st.booleans()),
                          0))
        else:  # the target's char array, locally an array of another length
            local.append((name, "chars", draw(st.integers(1, 32)), False, 0))
    flavor = draw(st.sampled_from(["", "___x", "___old", "___1"]))
    return target, local, flavor


def core_campaign() -> object:
    from pybpf import cdecl as cd
    from pybpf.core import (
        BPF_CORE_FIELD_BYTE_OFFSET,
        BPF_CORE_FIELD_BYTE_SIZE,
        BPF_CORE_FIELD_EXISTS,
        BPF_CORE_FIELD_SIGNED,
        CoreEngine,
        CoreRelo,
    )

    ints = {(1, False): cd.u8, (2, False): cd.u16, (4, False): cd.u32, (8, False): cd.u64,
            (1, True): cd.Int("signed char", 1, signed=True),
            (2, True): cd.Int("short", 2, signed=True), (4, True): cd.s32, (8, True): cd.s64}

    @given(layouts())
    def run(layout: tuple) -> None:
        COUNT[0] += 1
        target, local, flavor = layout
        b = BTFBuilder()
        int_ids = {}
        for (size, signed) in ints:
            int_ids[size, signed] = b.add_int(f"{'' if signed else 'u'}int{size * 8}", size,
                                              signed=signed)
        ch = b.add_int("char", 1, signed=True, char=True)
        idx = b.add_int("__ARRAY_SIZE_TYPE__", 4)
        members = []
        for name, kind, size, signed, off in target:
            tid = int_ids[size, signed] if kind == "int" else b.add_array(ch, idx, size)
            members.append((name, tid, off * 8))
        end = max(off + size for _, _, size, _, off in target)
        b.add_struct("thing", -(-end // 8) * 8, members)
        targ = BTF.from_bytes(b.encode())
        lstruct = cd.Struct("thing" + flavor, [
            (name, ints[size, signed] if kind == "int" else cd.Array(cd.char, size))
            for name, kind, size, signed, _ in local])
        data, ids = cd.encode_local_btf([lstruct])
        engine = CoreEngine(BTF.from_bytes(data), targ)
        by_name = {m[0]: m for m in target}
        for name, kind, _size, _signed, _ in local:
            access = lstruct.field(name).access
            t = by_name.get(name)
            for relo_kind in (BPF_CORE_FIELD_EXISTS, BPF_CORE_FIELD_BYTE_OFFSET,
                              BPF_CORE_FIELD_BYTE_SIZE, BPF_CORE_FIELD_SIGNED):
                if relo_kind == BPF_CORE_FIELD_SIGNED and kind != "int":
                    continue
                res = engine.relocate(CoreRelo(0, ids[id(lstruct)], access, relo_kind))
                if t is None:
                    want = 0 if relo_kind == BPF_CORE_FIELD_EXISTS else None
                    got = res.new_val if relo_kind == BPF_CORE_FIELD_EXISTS else (
                        None if res.poison else res.new_val)
                else:
                    want = {BPF_CORE_FIELD_EXISTS: 1, BPF_CORE_FIELD_BYTE_OFFSET: t[4],
                            BPF_CORE_FIELD_BYTE_SIZE: t[2],
                            BPF_CORE_FIELD_SIGNED: int(t[3])}[relo_kind]
                    got = None if res.poison else res.new_val
                if got != want:
                    raise Finding(f"member {name} kind {relo_kind}: got {got} (poison "
                                  f"{res.poison}), want {want}; target {target}, local {local}")

    return run


def core_mutated_campaign() -> object:
    from test_btf_fuzz import mutated

    from pybpf.errors import CORERelocationError
    from pybpf.object import prepare
    from pybpf.runner import load_tool

    tool = load_tool("runqslower")
    args = argparse.Namespace(min_us=0, transport="ringbuf", attach="tp_btf", previous=False,
                              json=False, pid=None, tid=None, comm=None)  # fmt: skip
    spec = tool.build(args)

    @given(mutated())
    def run(data: bytes) -> None:
        COUNT[0] += 1
        try:
            target = BTF.from_bytes(data)
        except BTFError:
            return
        try:
            prepare(spec, target)
        except (BTFError, CORERelocationError, PyBPFError):
            pass

    return run


CAMPAIGNS = {"parser": parser_campaign, "roundtrip": roundtrip_campaign, "core": core_campaign,
             "core-mutated": core_mutated_campaign}
COUNT = [0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=110_000, help="total over the campaigns")
    ap.add_argument("--campaign", action="append", choices=sorted(CAMPAIGNS))
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    chosen = args.campaign or list(CAMPAIGNS)
    total_share = sum(SHARES[c] for c in chosen)
    findings = 0
    grand = 0
    for name in chosen:
        n = max(1, round(args.examples * SHARES[name] / total_share))
        test = CAMPAIGNS[name]()
        test = settings(max_examples=n, deadline=None, database=None, print_blob=True,
                        suppress_health_check=list(HealthCheck))(test)
        if args.seed is not None:
            test = seed(args.seed)(test)
        COUNT[0] = 0
        start = time.monotonic()
        outcome = "no finding"
        try:
            test()
        except Exception as exc:  # a finding: crash or wrong result (hypothesis shrank it)
            findings += 1
            outcome = f"FINDING: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        elapsed = time.monotonic() - start
        grand += COUNT[0]
        print(f"{name}: {COUNT[0]:,} examples (asked {n:,}) in {elapsed:.0f} s "
              f"({COUNT[0] / elapsed:,.0f}/s): {outcome}", flush=True)
    print(f"total: {grand:,} examples, {findings} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
