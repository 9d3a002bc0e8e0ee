"""Generated CO-RE cases from a real kernel's BTF (used by the kernel and bpftool oracles).

``generate(btf)`` mirrors a deterministic sample of the kernel's structs,
unions, enums and typedefs as *local* pybpf types — a subset of members each,
laid out at local (natural-alignment) offsets that differ from the kernel's,
with bitfields, anonymous members, arrays, nested structs, typedef/const
chains, ``___flavor`` names, members and enumerators the kernel lacks, and a
member of the right name but an incompatible type — and returns one
relocation per (type, member path, kind).  The tests here check it offline;
``test_kernel_core_generated.py`` checks pybpf's answers against the kernel.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Union

from pybpf import cdecl as cd
from pybpf.asm import R1, R6, Asm
from pybpf.btf import (
    BTF,
    BTF_INT_BOOL,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VOLATILE,
)
from pybpf.core import KIND_BY_NAME

Target = Union[cd.FieldRef, cd.CType, cd.EnumValueRef]
FIELD = ("byte_off", "byte_sz", "field_exists", "signed", "lshift_u64", "rshift_u64")
TYPE = ("type_exists", "type_size", "type_matches", "target_type_id", "local_type_id")
ENUMVAL = ("enumval_exists", "enumval_value")
MISSING = "pybpf_no_such_member"


@dataclass(frozen=True)
class Case:
    kind: str
    target: Target
    wide: bool  # LD_IMM64 instead of MOV

    @property
    def label(self) -> str:
        t = self.target
        if isinstance(t, cd.FieldRef):
            return f"{self.kind} {t.root.name}.{t.dotted}"
        if isinstance(t, cd.EnumValueRef):
            return f"{self.kind} {t.root.name}::{t.name}"
        return f"{self.kind} {t.name}"

    def emit(self, a: Asm) -> None:
        if self.kind == "ldx":  # a load through a relocated offset (and width)
            assert isinstance(self.target, cd.FieldRef)
            a.ldx_core(R1, R6, self.target)
            return
        method = {
            "byte_off": a.field_offset, "byte_sz": a.field_size, "field_exists": a.field_exists,
            "signed": a.field_signed, "lshift_u64": a.field_lshift, "rshift_u64": a.field_rshift,
            "type_exists": a.type_exists, "type_size": a.type_size,
            "type_matches": a.type_matches, "target_type_id": a.type_id_target,
            "local_type_id": a.type_id_local, "enumval_exists": a.enumval_exists,
            "enumval_value": a.enumval_value,
        }[self.kind]  # fmt: skip
        method(R1, self.target, wide=self.wide)  # type: ignore[operator]

    @property
    def kind_number(self) -> int:
        return KIND_BY_NAME.get(self.kind, 0)  # "ldx" is a byte_off relocation


class _Mirror:
    """Local look-alikes of target types, with a sample of members."""

    def __init__(self, btf: BTF, rng: random.Random) -> None:
        self.btf, self.rng = btf, rng

    def ctype(self, tid: int, depth: int) -> cd.CType:
        t = self.btf.type(tid)
        k = t.kind
        if k == BTF_KIND_INT:
            enc = t.int_encoding
            size = t.size if t.size in (1, 2, 4, 8, 16) else 8
            return cd.Int(t.name, size, signed=bool(enc & BTF_INT_SIGNED),
                          bool_=bool(enc & BTF_INT_BOOL) and not enc & BTF_INT_SIGNED)  # fmt: skip
        if k == BTF_KIND_ARRAY:
            return cd.Array(self.ctype(t.elem_type, depth), t.nelems)
        if k in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            return self.composite(tid, depth)
        if k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return self.enum(tid)
        if k == BTF_KIND_TYPEDEF:
            return cd.Typedef(t.name, self.ctype(t.type, depth))
        if k == BTF_KIND_CONST:
            return cd.Const(self.ctype(t.type, depth))
        if k == BTF_KIND_VOLATILE:
            return cd.Volatile(self.ctype(t.type, depth))
        if k == BTF_KIND_FLOAT:
            return cd.Float(t.name, t.size)
        if k == BTF_KIND_FWD:
            return cd.Fwd(t.name, union=t.kflag)
        if k == BTF_KIND_PTR:
            return cd.Ptr(None)
        if k in (11, 18):  # RESTRICT, TYPE_TAG: skipped
            return self.ctype(t.type, depth)
        return cd.Fwd("pybpf_opaque")  # void, function prototypes

    def enum(self, tid: int, extra: bool = False) -> cd.Enum:
        t = self.btf.type(tid)
        picked = list(t.values[:3]) + list(t.values[-1:])
        values = {v.name: v.value for v in picked}
        if extra:
            values["PYBPF_NO_SUCH_VALUE"] = 7
        return cd.Enum(t.name, values, t.size if t.size in (1, 2, 4, 8) else 4, signed=t.kflag)

    def composite(self, tid: int, depth: int, name: str = "", extra: bool = False) -> cd.Struct:
        t = self.btf.type(tid)
        members: list[tuple] = []
        if depth < 2:
            order = list(range(len(t.members)))
            special = [i for i in order if t.members[i].bitfield_size or not t.members[i].name]
            rest = [i for i in order if i not in special]
            self.rng.shuffle(rest)
            keep = sorted(set(special[:3] + rest[: 5 - min(3, len(special))]))
            for i in keep:
                m = t.members[i]
                ctype = self.ctype(m.type, depth + 1)
                if m.bitfield_size:
                    if not isinstance(cd.strip_mods(ctype), (cd.Int, cd.Enum)):
                        continue
                    members.append((m.name, ctype, m.bitfield_size))
                elif not m.name and not isinstance(cd.strip_mods(ctype), cd.Struct):
                    continue
                else:
                    members.append((m.name, ctype))
        if extra:
            members.append((MISSING, cd.u32))
        return cd.Struct(name or t.name, members, union=t.kind == BTF_KIND_UNION)


def _paths(struct: cd.Struct, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Member paths worth relocating: named members, through anonymous ones, into
    nested structs and arrays (first and last element)."""
    out: list[tuple] = []
    for name, ctype, _, _ in struct.fields:
        inner = cd.strip_mods(ctype)
        if not name:
            if isinstance(inner, cd.Struct):
                out += _paths(inner, prefix, depth)
            continue
        path = (*prefix, name)
        out.append(path)
        if depth < 2 and isinstance(inner, cd.Struct) and inner.name:
            out += _paths(inner, path, depth + 1)
        if isinstance(inner, cd.Array) and inner.nelems:
            out.append((*path, 0))
            if inner.nelems > 1:
                out.append((*path, inner.nelems - 1))
    return out


def _loadable(ref: cd.FieldRef) -> bool:
    leaf = cd.strip_mods(ref.ctype)
    return not ref.bitfield and isinstance(leaf, (cd.Int, cd.Enum, cd.Ptr)) and leaf.size in (
        1, 2, 4, 8)


def _field_kinds(ref: cd.FieldRef) -> tuple[str, ...]:
    leaf = cd.strip_mods(ref.ctype)
    if isinstance(ref.path[-1], int):
        return ("byte_off", "byte_sz")  # libbpf refuses the rest on array elements
    if isinstance(leaf, (cd.Int, cd.Enum)) and leaf.size <= 8:
        return FIELD
    return ("byte_off", "byte_sz", "field_exists")


# Every local flavor keeps its target's kind: the kernel caches candidates by essential
# name only (not kind), across loads, so a local struct and union of one name could get
# each other's candidates depending on what was loaded before.


def generate(btf: BTF, seed: int = 5, structs: int = 50, enums: int = 30) -> list[Case]:
    """About 2,000 relocation cases drawn from ``btf``."""
    rng = random.Random(seed)
    mirror = _Mirror(btf, rng)
    named_struct = []
    named_enum = []
    typedefs = []
    for tid in range(1, len(btf)):
        k = btf.kind_of(tid)
        if k in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            t = btf.type(tid)
            if t.name and t.members and "___" not in t.name:
                named_struct.append(tid)
        elif k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            t = btf.type(tid)
            if t.name and t.values and "___" not in t.name:
                named_enum.append(tid)
        elif k == BTF_KIND_TYPEDEF and "___" not in btf.name_of(tid):
            typedefs.append(tid)
    # Prefer structs with bitfields and anonymous members, then a random sample.
    rich = [
        tid for tid in named_struct
        if any(m.bitfield_size or not m.name for m in btf.type(tid).members)
    ]  # fmt: skip
    picked = sorted(set(rng.sample(rich, min(structs // 2, len(rich)))
                        + rng.sample(named_struct, structs // 2)))  # fmt: skip
    cases: list[Case] = []
    wide = False

    def add(kind: str, target: Target) -> None:
        nonlocal wide
        cases.append(Case(kind, target, wide))
        wide = not wide if kind not in ("lshift_u64",) else wide

    for n, tid in enumerate(picked):
        name = btf.name_of(tid)
        flavor = (name + "___pybpf") if n % 3 == 1 else name
        local = mirror.composite(tid, 0, name=flavor, extra=True)
        for path in _paths(local):
            ref = cd.FieldRef(local, path)
            for kind in _field_kinds(ref):
                add(kind, ref)
        for kind in ("field_exists", "byte_off", "byte_sz") if n % 2 else ("field_exists",):
            add(kind, cd.FieldRef(local, (MISSING,)))
        add("ldx", cd.FieldRef(local, (MISSING,)))
        loadable = [p for p in _paths(local) if _loadable(cd.FieldRef(local, p))]
        for path in loadable:
            add("ldx", cd.FieldRef(local, path))
        # The same members declared wider (u64: unsigned, may narrow) and signed (long:
        # a signed field that changes width poisons the load).
        scalars = [p for p in loadable if len(p) == 1 and p[0] != MISSING
                   and isinstance(cd.strip_mods(cd.FieldRef(local, p).ctype), cd.Int)]  # fmt: skip
        if scalars:
            for flavor_name, wide_type in (("___w", cd.u64), ("___s", cd.long)):
                other = cd.Struct(name + flavor_name, [(p[0], wide_type) for p in scalars[:3]],
                                  union=local.union)  # fmt: skip
                for p in scalars[:3]:
                    add("ldx", cd.FieldRef(other, p))
        for kind in TYPE:
            add(kind, local)
        # Same member name, incompatible type (a struct where the kernel has an int).
        ints = [p for p in _paths(local) if len(p) == 1 and p[0] != MISSING
                and isinstance(cd.strip_mods(cd.FieldRef(local, p).ctype), cd.Int)]  # fmt: skip
        if ints and n % 4 == 0:
            bad = cd.Struct(name + "___bad", [(ints[0][0], cd.Struct("pybpf_s", [("x", cd.u32)]))],
                            union=local.union)  # fmt: skip
            add("field_exists", cd.FieldRef(bad, (ints[0][0],)))
            add("byte_off", cd.FieldRef(bad, (ints[0][0],)))
    enum64 = [tid for tid in named_enum if btf.kind_of(tid) == BTF_KIND_ENUM64][:5]
    for tid in sorted(set(rng.sample(named_enum, min(enums, len(named_enum))) + enum64)):
        local = mirror.enum(tid, extra=True)
        for vname in local.values:
            add("enumval_exists", local.enumerator(vname))
            add("enumval_value", local.enumerator(vname))
        for kind in TYPE:
            add(kind, local)
    for tid in sorted(rng.sample(typedefs, 30)):
        local = mirror.ctype(tid, 1)
        for kind in ("type_exists", "type_size", "type_matches", "target_type_id"):
            add(kind, local)
    ghost = cd.Struct("pybpf_no_such_type", [("a", cd.u32)])
    for kind in TYPE:
        add(kind, ghost)
    add("field_exists", ghost.a)
    add("byte_off", ghost.a)
    ghost_enum = cd.Enum("pybpf_no_such_enum", {"PYBPF_X": 1})
    add("enumval_exists", ghost_enum.PYBPF_X)
    add("enumval_value", ghost_enum.PYBPF_X)
    return cases


# ---------------------------------------------------------------------------- offline tests


def test_generated_cases_cover_every_kind_and_shape():
    btf = BTF.kernel() if _has_kernel_btf() else _blob("firecracker-6.18.44-fc-v657")
    cases = generate(btf)
    assert len(cases) >= 1000
    assert {c.kind for c in cases} == set(FIELD + TYPE + ENUMVAL + ("ldx",))
    refs = [c.target for c in cases if isinstance(c.target, cd.FieldRef)]
    assert any(r.bitfield for r in refs), "no bitfields"
    assert any(isinstance(p, int) for r in refs for p in r.path), "no array elements"
    assert any(len(r.access.split(":")) > len(r.path) + 1 for r in refs), "no anonymous members"
    assert any("___" in r.root.name for r in refs), "no flavors"
    assert any(c.wide for c in cases) and any(not c.wide for c in cases)
    enums = [c.target.root for c in cases if isinstance(c.target, cd.EnumValueRef)]
    assert any(e.size == 8 for e in enums), "no enum64"


def _has_kernel_btf() -> bool:
    import os

    return os.path.exists("/sys/kernel/btf/vmlinux")


def _blob(name: str) -> BTF:
    from pathlib import Path

    return BTF.from_file(Path(__file__).resolve().parent.parent / "btf" / f"{name}.btf.xz")


def test_libbpf_and_kernel_rules_differ_only_where_documented():
    """On generated cases (one relocation per engine, so no narrowing), libbpf's and
    the kernel's rules agree except that the kernel refuses deep type_matches."""
    from pybpf.asm import R0
    from pybpf.cdecl import encode_local_btf
    from pybpf.core import CoreEngine, CoreRelo
    from pybpf.errors import CORERelocationError
    from pybpf.object import ProgramSpec, _core_roots

    btf = _blob("debian-6.12.95+deb12-amd64")
    cases = generate(btf, structs=30, enums=10)
    a = Asm()
    for c in cases:
        c.emit(a)
    a.mov(R0, 0).exit()
    data, ids = encode_local_btf(_core_roots([ProgramSpec("x", "raw_tp/x", a.assemble())]))
    local = BTF.from_bytes(data)
    differ = 0
    for c in cases:
        t = c.target
        ref = isinstance(t, (cd.FieldRef, cd.EnumValueRef))
        relo = CoreRelo(0, ids[id(t.root if ref else t)], t.access if ref else "0", c.kind_number)
        results = []
        for rules in ("libbpf", "kernel"):
            try:
                r = CoreEngine(local, btf, rules=rules).relocate(relo)
                results.append((r.new_val, r.poison))
            except CORERelocationError as err:
                results.append(("error", str(err)[:20]))
        if results[0] != results[1]:
            assert c.kind == "type_matches" and results[1][0] == "error", (c.label, results)
            differ += 1
    assert differ < len(cases) // 10
