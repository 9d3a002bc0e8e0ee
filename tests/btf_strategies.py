"""Hypothesis strategies: lists of BTF types (pybpf.btf.Type) for encoder/parser tests.

``any_types``: every kind with arbitrary field values (ids in range, nothing else checked),
for parse(encode(x)) == x.  ``kernel_types``: C-like type graphs that obey the kernel's BTF
verifier rules (kernel/bpf/btf.c: identifiers, sizes, member order, referenced kinds), for
BPF_BTF_LOAD.
"""

from __future__ import annotations

from hypothesis import strategies as st

from pybpf.btf import (
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    EnumValue,
    Member,
    Param,
    Type,
    VarSecinfo,
)

U32 = st.integers(0, 0xFFFFFFFF)
IDENT = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z")
NAME = st.one_of(st.just(""), IDENT, st.text(min_size=1, max_size=6).filter(
    lambda s: "\0" not in s))


@st.composite
def any_types(draw: st.DrawFn, max_types: int = 25) -> list[Type]:
    """Arbitrary (not necessarily meaningful) types of every kind."""
    n = draw(st.integers(1, max_types))
    out = []
    for tid in range(1, n + 1):
        ref = st.integers(0, n)
        kind = draw(st.integers(1, 19))
        name = draw(NAME)
        kflag = draw(st.booleans())
        if kind == BTF_KIND_INT:
            t = Type(tid, kind, name, 0, False, size=draw(U32),
                     int_encoding=draw(st.integers(0, 15)), int_offset=draw(st.integers(0, 255)),
                     int_bits=draw(st.integers(0, 255)))
        elif kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            ms = draw(st.lists(st.tuples(NAME, ref, st.integers(0, (1 << 24) - 1),
                                         st.integers(0, 255)), max_size=5))
            members = tuple(Member(a, b, c if kflag else c, d if kflag else 0)
                            for a, b, c, d in ms)
            t = Type(tid, kind, name, len(members), kflag, size=draw(U32), members=members)
        elif kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            bits = 64 if kind == BTF_KIND_ENUM64 else 32
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kflag else (0, (1 << bits) - 1)
            vals = tuple(EnumValue(a, b) for a, b in draw(st.lists(
                st.tuples(NAME, st.integers(lo, hi)), max_size=5)))
            t = Type(tid, kind, name, len(vals), kflag, size=draw(U32), values=vals)
        elif kind == BTF_KIND_ARRAY:
            t = Type(tid, kind, name, 0, kflag, elem_type=draw(ref), index_type=draw(ref),
                     nelems=draw(U32))
        elif kind == BTF_KIND_FUNC_PROTO:
            ps = tuple(Param(a, b) for a, b in draw(st.lists(st.tuples(NAME, ref), max_size=5)))
            t = Type(tid, kind, name, len(ps), kflag, type=draw(ref), params=ps)
        elif kind == BTF_KIND_FUNC:
            link = draw(st.integers(0, 0xFFFF))
            t = Type(tid, kind, name, link, kflag, type=draw(ref), linkage=link)
        elif kind == BTF_KIND_VAR:
            t = Type(tid, kind, name, 0, kflag, type=draw(ref), linkage=draw(U32))
        elif kind == BTF_KIND_DATASEC:
            si = tuple(VarSecinfo(*x) for x in draw(st.lists(st.tuples(ref, U32, U32),
                                                             max_size=4)))
            t = Type(tid, kind, name, len(si), kflag, size=draw(U32), secinfos=si)
        elif kind == BTF_KIND_DECL_TAG:
            t = Type(tid, kind, name, 0, kflag, type=draw(ref),
                     component_idx=draw(st.integers(-(1 << 31), (1 << 31) - 1)))
        elif kind == BTF_KIND_FLOAT:
            t = Type(tid, kind, name, 0, kflag, size=draw(U32))
        elif kind == BTF_KIND_FWD:
            t = Type(tid, kind, name, 0, kflag)
        else:  # PTR TYPEDEF VOLATILE CONST RESTRICT TYPE_TAG
            t = Type(tid, kind, name, 0, kflag, type=draw(ref))
        out.append(t)
    return out


@st.composite
def kernel_types(draw: st.DrawFn, max_types: int = 30) -> list[Type]:
    """Well-formed C-like BTF: every reference points to an earlier type (no loops)."""
    out: list[Type] = []
    sizes: dict[int, int] = {}  # sized types: id -> size in bytes
    ints: list[int] = []  # INT ids usable as array index / bitfield base
    composites: list[int] = []
    funcs: list[int] = []
    vars_: list[int] = []
    pointees: list[int] = []  # unsized types a pointer may target: FWD, FUNC_PROTO

    def add(t: Type, size: int | None = None) -> int:
        out.append(t)
        if size is not None:
            sizes[t.id] = size
        return t.id

    def nid() -> int:
        return len(out) + 1

    # at least one int, so arrays and bitfields always have a base
    ints.append(add(Type(1, BTF_KIND_INT, "int", 0, False, size=4, int_encoding=1,
                         int_bits=32), 4))
    n = draw(st.integers(1, max_types))
    for _ in range(n):
        choice = draw(st.sampled_from(
            ["int", "ptr", "mod", "typedef", "array", "struct", "union", "enum", "enum64",
             "fwd", "func", "var", "float", "tag", "ptr_tag"]))
        sized = sorted(sizes)
        if choice == "int":
            size = draw(st.sampled_from([1, 2, 4, 8, 16]))
            regular = draw(st.booleans())
            bits = size * 8 if regular else draw(st.integers(1, size * 8))
            off = 0 if regular else draw(st.integers(0, size * 8 - bits))
            t = Type(nid(), BTF_KIND_INT, draw(IDENT), 0, False, size=size,
                     int_encoding=draw(st.sampled_from([0, 1, 2, 4])),
                     int_offset=off, int_bits=bits)
            # only "regular" ints (btf_type_int_is_regular) index arrays, hold bitfields or
            # are referenced at all; the others just have to be accepted
            if regular and size <= 8:
                ints.append(add(t, size))
            elif regular:
                add(t, size)
            else:
                add(t)
        elif choice == "ptr":
            target = draw(st.sampled_from([0, *sized, *pointees]))
            add(Type(nid(), BTF_KIND_PTR, "", 0, False, type=target), 8)
        elif choice == "ptr_tag":
            tag = add(Type(nid(), BTF_KIND_TYPE_TAG, draw(IDENT), 0, False,
                           type=draw(st.sampled_from(sized))))
            add(Type(nid(), BTF_KIND_PTR, "", 0, False, type=tag), 8)
        elif choice == "mod":
            target = draw(st.sampled_from(sized))
            kind = draw(st.sampled_from([BTF_KIND_CONST, BTF_KIND_VOLATILE]))
            add(Type(nid(), kind, "", 0, False, type=target), sizes[target])
        elif choice == "typedef":
            target = draw(st.sampled_from(sized))
            add(Type(nid(), BTF_KIND_TYPEDEF, draw(IDENT), 0, False, type=target),
                sizes[target])
        elif choice == "array":
            elem = draw(st.sampled_from(sized))
            nelems = draw(st.integers(0, 16))
            add(Type(nid(), BTF_KIND_ARRAY, "", 0, False, elem_type=elem,
                     index_type=draw(st.sampled_from(ints)), nelems=nelems),
                sizes[elem] * nelems)
        elif choice in ("struct", "union"):
            members, off, bitfields = [], 0, draw(st.booleans())
            for _m in range(draw(st.integers(0, 5))):
                mt = draw(st.sampled_from(sized))
                mname = draw(IDENT)
                if bitfields and mt in ints and sizes[mt] <= 8 and choice == "struct":
                    nb = draw(st.integers(1, sizes[mt] * 8))
                    members.append(Member(mname, mt, off, nb))
                    off += nb
                else:
                    # natural alignment (the kernel checks it for FLOAT members)
                    align = 8 * max(a for a in (1, 2, 4, 8) if a <= max(min(sizes[mt], 8), 1))
                    start = 0 if choice == "union" else -(-off // align) * align
                    members.append(Member(mname, mt, start, 0))
                    off = max(off, start + 8 * sizes[mt]) if choice == "struct" else \
                        max(off, 8 * sizes[mt])
            size = -(-off // 8) + draw(st.integers(0, 8))
            kind = BTF_KIND_STRUCT if choice == "struct" else BTF_KIND_UNION
            composites.append(add(Type(nid(), kind, draw(st.one_of(st.just(""), IDENT)),
                                       len(members), bitfields, size=size,
                                       members=tuple(members)), size))
        elif choice in ("enum", "enum64"):
            signed = draw(st.booleans())
            bits = 64 if choice == "enum64" else 32
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            names = draw(st.lists(IDENT, max_size=4, unique=True))
            vals = tuple(EnumValue(v, draw(st.integers(lo, hi))) for v in names)
            size = 8 if choice == "enum64" else draw(st.sampled_from([1, 2, 4]))
            if size < 4:
                vals = tuple(EnumValue(v.name, v.value % (1 << (8 * size - 1))) for v in vals)
            kind = BTF_KIND_ENUM64 if choice == "enum64" else BTF_KIND_ENUM
            t = Type(nid(), kind, draw(IDENT), len(vals), signed, size=size, values=vals)
            # the kernel checks ENUM members as 4 bytes (btf_enum_check_member): 1- and
            # 2-byte enums are only declared here, not used
            add(t, size) if size >= 4 else add(t)
        elif choice == "fwd":
            pointees.append(add(Type(nid(), BTF_KIND_FWD, draw(IDENT), 0, draw(st.booleans()))))
        elif choice == "func":
            ps = tuple(Param(draw(IDENT), draw(st.sampled_from(sized)))
                       for _p in range(draw(st.integers(0, 4))))
            proto = add(Type(nid(), BTF_KIND_FUNC_PROTO, "", len(ps), False,
                             type=draw(st.sampled_from([0, *sized])), params=ps))
            pointees.append(proto)
            link = draw(st.sampled_from([0, 1]))
            funcs.append(add(Type(nid(), BTF_KIND_FUNC, draw(IDENT), link, False, type=proto,
                                  linkage=link)))
        elif choice == "var":
            vars_.append(add(Type(nid(), BTF_KIND_VAR, draw(IDENT), 0, False,
                                  type=draw(st.sampled_from(sized)),
                                  linkage=draw(st.sampled_from([0, 1])))))
        elif choice == "float":
            size = draw(st.sampled_from([2, 4, 8, 12, 16]))
            add(Type(nid(), BTF_KIND_FLOAT, draw(IDENT), 0, False, size=size), size)
        elif choice == "tag" and (composites or funcs or vars_):
            target = draw(st.sampled_from(composites + funcs + vars_))
            tt = out[target - 1]
            ncomp = len(tt.members) if tt.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) else (
                len(out[tt.type - 1].params) if tt.kind == BTF_KIND_FUNC else 0)
            add(Type(nid(), BTF_KIND_DECL_TAG, draw(IDENT), 0, False, type=target,
                     component_idx=draw(st.integers(-1, ncomp - 1))))
    si, off = [], 0
    if vars_:
        for v in vars_:
            vsize = sizes[out[v - 1].type]
            if not vsize:
                continue  # the kernel refuses empty section entries
            si.append(VarSecinfo(v, off, vsize))
            off += vsize
    if si:
        add(Type(nid(), BTF_KIND_DATASEC, ".data", len(si), False, size=off,
                 secinfos=tuple(si)))
    return out
