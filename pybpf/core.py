"""CO-RE relocation: local BTF + access string in, target value out (pure).

This follows libbpf's ``relo_core.c`` step by step, so it gives libbpf's
answers: parse the local access spec, find target candidates whose
*essential name* (the name without a ``___flavor`` suffix) equals the local
one, match the spec against each candidate member by member (by name,
through anonymous members, with compatible types), compute the relocated
value, insist that all matching candidates agree, and patch the
instruction.  A relocation whose target does not exist poisons the
instruction with ``call 0xbad2310`` (both halves of an ``LD_IMM64``): the
verifier only complains if that code is reachable.

The kernel runs the same file since 5.17 (``BPF_PROG_LOAD`` with
``core_relos``), with three differences that ``rules="kernel"`` reproduces:
candidates must have exactly the local kind (``enum`` never finds
``enum64``), type compatibility and type matching recurse at most 2 levels
into function prototypes and struct members (libbpf: 32), and the candidate
list of a local type is not narrowed by earlier relocations.  Not modelled:
the kernel caches candidate lists globally, across loads, keyed by essential
name but not kind, so a local struct and a local union of one essential name
can be given each other's candidates depending on what was loaded before.

Values are kept as libbpf keeps them, unsigned 64-bit: a 32-bit enumerator is
sign-extended first (``btf_enum.val`` is an ``__s32``), whatever the enum's
signedness.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from . import isa
from .asm import (
    BPF_CORE_ENUMVAL_EXISTS,
    BPF_CORE_ENUMVAL_VALUE,
    BPF_CORE_FIELD_BYTE_OFFSET,
    BPF_CORE_FIELD_BYTE_SIZE,
    BPF_CORE_FIELD_EXISTS,
    BPF_CORE_FIELD_LSHIFT_U64,
    BPF_CORE_FIELD_RSHIFT_U64,
    BPF_CORE_FIELD_SIGNED,
    BPF_CORE_TYPE_EXISTS,
    BPF_CORE_TYPE_ID_LOCAL,
    BPF_CORE_TYPE_ID_TARGET,
    BPF_CORE_TYPE_MATCHES,
    BPF_CORE_TYPE_SIZE,
)
from .btf import (
    BTF,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_UNION,
    BTF_KIND_UNKN,
    Type,
)
from .errors import BTFError, CORERelocationError
from .ints import s32 as _s32
from .record import FrozenRecord

# libbpf's names for the relocation kinds (core_relo_kind_str).
KIND_NAMES = {
    BPF_CORE_FIELD_BYTE_OFFSET: "byte_off",
    BPF_CORE_FIELD_BYTE_SIZE: "byte_sz",
    BPF_CORE_FIELD_EXISTS: "field_exists",
    BPF_CORE_FIELD_SIGNED: "signed",
    BPF_CORE_FIELD_LSHIFT_U64: "lshift_u64",
    BPF_CORE_FIELD_RSHIFT_U64: "rshift_u64",
    BPF_CORE_TYPE_ID_LOCAL: "local_type_id",
    BPF_CORE_TYPE_ID_TARGET: "target_type_id",
    BPF_CORE_TYPE_EXISTS: "type_exists",
    BPF_CORE_TYPE_MATCHES: "type_matches",
    BPF_CORE_TYPE_SIZE: "type_size",
    BPF_CORE_ENUMVAL_EXISTS: "enumval_exists",
    BPF_CORE_ENUMVAL_VALUE: "enumval_value",
}
KIND_BY_NAME = {v: k for k, v in KIND_NAMES.items()}
FIELD_KINDS = frozenset(range(BPF_CORE_FIELD_BYTE_OFFSET, BPF_CORE_FIELD_RSHIFT_U64 + 1))
TYPE_KINDS = frozenset(
    {BPF_CORE_TYPE_ID_LOCAL, BPF_CORE_TYPE_ID_TARGET, BPF_CORE_TYPE_EXISTS,
     BPF_CORE_TYPE_MATCHES, BPF_CORE_TYPE_SIZE}
)  # fmt: skip
ENUMVAL_KINDS = frozenset({BPF_CORE_ENUMVAL_EXISTS, BPF_CORE_ENUMVAL_VALUE})

# What libbpf writes over an instruction it cannot relocate ("bad relo").
POISON_IMM = 0xBAD2310
BPF_CORE_SPEC_MAX_LEN = 64  # libbpf's limit on access-string length
_U64 = (1 << 64) - 1
_SHRT_MAX = 0x7FFF
_COMPOSITE = (BTF_KIND_STRUCT, BTF_KIND_UNION)
_ANY_ENUM = (BTF_KIND_ENUM, BTF_KIND_ENUM64)


class Rules:
    """Where libbpf (user space) and the kernel's copy of relo_core.c differ.

    (Plain classes here, not dataclasses: each dataclass costs start-up time.)"""

    __slots__ = ("name", "depth", "exact_kind", "narrow")

    def __init__(self, name: str, depth: int, exact_kind: bool, narrow: bool) -> None:
        self.name = name
        self.depth = depth  # recursion budget of types_are_compat / types_match
        self.exact_kind = exact_kind  # candidates need the local kind exactly (kernel)
        self.narrow = narrow  # a matching relocation narrows the cached candidate list

    @classmethod
    def get(cls, name: Union[str, Rules]) -> Rules:
        if isinstance(name, Rules):
            return name
        try:
            return _RULES[name]
        except KeyError:
            raise CORERelocationError(f"unknown CO-RE rules {name!r} (libbpf, kernel)") from None


_RULES = {
    "libbpf": Rules("libbpf", 32, False, True),
    "kernel": Rules("kernel", 2, True, False),
}


class CoreRelo(FrozenRecord):
    """One relocation record, as in ``struct bpf_core_relo`` (insn as a slot index)."""

    _fields = ("insn", "type_id", "access", "kind")

    insn: int
    type_id: int  # local root type id
    access: str
    kind: int


class Accessor:
    """libbpf's ``bpf_core_accessor``: a named member, or an array index (name None).

    ``type_id``: the struct/union holding the member, or the array's element type."""

    __slots__ = ("type_id", "idx", "name")

    def __init__(self, type_id: int, idx: int, name: Optional[str]) -> None:
        self.type_id, self.idx, self.name = type_id, idx, name


class Spec:
    """A parsed access path against one BTF (libbpf's ``struct bpf_core_spec``)."""

    __slots__ = ("btf", "root_type_id", "kind", "raw", "accessors", "bit_offset")

    def __init__(self, btf: BTF, root_type_id: int, kind: int) -> None:
        self.btf, self.root_type_id, self.kind = btf, root_type_id, kind
        self.raw: list[int] = []
        self.accessors: list[Accessor] = []
        self.bit_offset = 0

    def format(self) -> str:
        """libbpf's ``bpf_core_format_spec``: ``[5] STRUCT task.comm[3] (0:84:3 @ offset 3043)``."""
        t = self.btf.type(self.root_type_id)
        text = f"[{self.root_type_id}] {t.kind_name} {t.name or '<anon>'}"
        if self.kind in TYPE_KINDS:
            return text
        if self.kind in ENUMVAL_KINDS:
            if self.accessors:
                acc = self.accessors[0]
                e = self.btf.type(acc.type_id)
                text += f"::{acc.name} = {e.values[acc.idx].value}"
            return text
        for i, acc in enumerate(self.accessors):
            if acc.name:
                text += f".{acc.name}"
            elif i > 0 or acc.idx > 0:
                text += f"[{acc.idx}]"
        off = f"{self.bit_offset // 8}" + (f".{self.bit_offset % 8}" if self.bit_offset % 8 else "")
        return text + f" ({':'.join(map(str, self.raw))} @ offset {off})"


class Candidate:
    """A target type considered for a relocation, and what became of it."""

    __slots__ = ("btf_name", "type_id", "type_name", "kind", "matched", "reason")

    def __init__(
        self, btf_name: str, type_id: int, type_name: str, kind: str, matched: bool,
        reason: str = "",
    ) -> None:  # fmt: skip
        self.btf_name = btf_name  # "vmlinux" or a module's name
        self.type_id, self.type_name, self.kind = type_id, type_name, kind
        self.matched = matched
        self.reason = reason  # why it was rejected, or the matched spec

    def __repr__(self) -> str:
        verdict = "matched" if self.matched else f"rejected: {self.reason}"
        return f"<Candidate {self.btf_name}[{self.type_id}] {self.type_name}: {verdict}>"


class CoreResult(FrozenRecord):
    """The outcome of one relocation (libbpf's ``struct bpf_core_relo_res``).

    ``orig_val``/``new_val`` are unsigned 64-bit as in libbpf; ``new_val`` is None
    when the instruction is poisoned.  ``reason`` says why it was poisoned."""

    _fields = ("orig_val", "new_val", "orig_sz", "new_sz", "orig_type_id", "new_type_id", "poison",
               "validate", "fail_memsz_adjust", "target_type_id", "target_spec", "reason",
               "candidates")
    _defaults = {"orig_sz": 0, "new_sz": 0, "orig_type_id": 0, "new_type_id": 0, "poison": False,
                 "validate": True, "fail_memsz_adjust": False, "target_type_id": 0,
                 "target_spec": "", "reason": "", "candidates": ()}

    orig_val: int
    new_val: Optional[int]
    orig_sz: int
    new_sz: int
    orig_type_id: int
    new_type_id: int
    poison: bool
    validate: bool
    fail_memsz_adjust: bool
    target_type_id: int
    target_spec: str
    reason: str
    candidates: tuple[Candidate, ...]


# ------------------------------------------------------------------ names


def essential_name_len(name: str) -> int:
    """Length of ``name`` without its ``___flavor`` suffix (libbpf's rule).

    Only the last ``X___Y`` separator counts, X and Y not underscores:
    ``foo___1___2`` -> ``foo___1``; ``a____b`` and ``___x`` have none.
    """
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1 : i + 4] == "___" and name[i + 4] != "_":
            return i + 1
    return len(name)


def essential_name(name: str) -> str:
    return name[: essential_name_len(name)]


def _kind_core_compat(a: Type, b: Type) -> bool:
    return a.kind == b.kind or (a.kind in _ANY_ENUM and b.kind in _ANY_ENUM)


def _ess_eq(a: str, b: str) -> bool:
    la, lb = essential_name_len(a), essential_name_len(b)
    return la == lb and a[:la] == b[:lb]


def _skip(btf: BTF, type_id: int) -> tuple[int, Type]:
    tid = btf.skip_mods_and_typedefs(type_id)
    return tid, btf.type(tid)


def _size(btf: BTF, type_id: int) -> int:
    try:
        return btf.resolve_size(type_id)
    except BTFError as err:
        raise CORERelocationError(str(err)) from None


def _what(t: Type) -> str:
    return f"{t.kind_name.lower()} {t.name or '<anon>'}"


# ------------------------------------------------------------------ local spec


def parse_spec(btf: BTF, type_id: int, access: str, kind: int) -> Spec:
    """libbpf's ``bpf_core_parse_spec``: walk ``access`` ("0:1:2") over ``type_id``."""
    if kind not in KIND_NAMES:
        raise CORERelocationError(f"unknown CO-RE relocation kind {kind}")
    spec = Spec(btf, type_id, kind)
    if kind in TYPE_KINDS:
        if access != "0":
            raise CORERelocationError(f"type relocation needs access string '0', got {access!r}")
        return spec
    parts = access.split(":")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise CORERelocationError(f"malformed access string {access!r}")
    raw = [int(part) for part in parts]
    if len(raw) > BPF_CORE_SPEC_MAX_LEN:
        raise CORERelocationError(f"access string {access!r} deeper than {BPF_CORE_SPEC_MAX_LEN}")
    spec.raw = raw
    tid, t = _skip(btf, type_id)
    spec.accessors.append(Accessor(tid, raw[0], None))
    if kind in ENUMVAL_KINDS:
        if t.kind not in _ANY_ENUM or len(raw) > 1 or raw[0] >= len(t.values):
            raise CORERelocationError(f"enum value access {access!r} invalid for {_what(t)}")
        spec.accessors[0].name = t.values[raw[0]].name
        return spec
    spec.bit_offset = raw[0] * _size(btf, tid) * 8
    for i in range(1, len(raw)):
        idx = raw[i]
        tid, t = _skip(btf, tid)
        if t.kind in _COMPOSITE:
            if idx >= len(t.members):
                raise CORERelocationError(f"{_what(t)} has no member #{idx} (access {access!r})")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.accessors.append(Accessor(tid, idx, m.name))
            tid = m.type
        elif t.kind == BTF_KIND_ARRAY:
            elem, _ = _skip(btf, t.elem_type)
            if not _is_flex_arr(btf, spec.accessors[-1], t) and idx >= t.nelems:
                raise CORERelocationError(
                    f"array index {idx} out of bounds [0, {t.nelems}) (access {access!r})"
                )
            spec.accessors.append(Accessor(elem, idx, None))
            spec.bit_offset += idx * _size(btf, elem) * 8
            tid = elem
        else:
            raise CORERelocationError(
                f"access {access!r} steps into {_what(t)} (#{tid}), not a struct, union or array"
            )
    return spec


def _is_flex_arr(btf: BTF, acc: Accessor, arr: Type) -> bool:
    """A zero-length array that is the last named member of its struct (``char data[]``)."""
    if not acc.name or arr.nelems > 0:
        return False
    return acc.idx == len(btf.type(acc.type_id).members) - 1


# ------------------------------------------------------------------ compatibility


def types_are_compat(
    local_btf: BTF, local_id: int, targ_btf: BTF, targ_id: int, level: int = 32
) -> bool:
    """libbpf's ``__bpf_core_types_are_compat`` (what type_exists/size/id need)."""
    if not _kind_core_compat(local_btf.type(local_id), targ_btf.type(targ_id)):
        return False
    depth = 32
    while True:
        depth -= 1
        if depth < 0:
            raise CORERelocationError("type compatibility check deeper than 32 levels")
        local_id, lt = _skip(local_btf, local_id)
        targ_id, tt = _skip(targ_btf, targ_id)
        if not _kind_core_compat(lt, tt):
            return False
        k = lt.kind
        if k in (BTF_KIND_UNKN, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_FWD, *_ANY_ENUM):
            return True
        if k == BTF_KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if k == BTF_KIND_PTR:
            local_id, targ_id = lt.type, tt.type
        elif k == BTF_KIND_ARRAY:
            local_id, targ_id = lt.elem_type, tt.elem_type
        elif k == BTF_KIND_FUNC_PROTO:
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if level <= 0:
                    raise CORERelocationError("function prototype nested too deeply to compare")
                lpid = local_btf.skip_mods_and_typedefs(lp.type)
                tpid = targ_btf.skip_mods_and_typedefs(tp.type)
                if not types_are_compat(local_btf, lpid, targ_btf, tpid, level - 1):
                    return False
            local_id = local_btf.skip_mods_and_typedefs(lt.type)
            targ_id = targ_btf.skip_mods_and_typedefs(tt.type)
        else:
            return False  # libbpf: "unexpected kind relocated"


def fields_are_compat(local_btf: BTF, local_id: int, targ_btf: BTF, targ_id: int) -> bool:
    """libbpf's ``bpf_core_fields_are_compat``: may a local field read a target one?"""
    while True:
        local_id, lt = _skip(local_btf, local_id)
        targ_id, tt = _skip(targ_btf, targ_id)
        if lt.kind in _COMPOSITE and tt.kind in _COMPOSITE:
            return True
        if not _kind_core_compat(lt, tt):
            return False
        if lt.kind in (BTF_KIND_PTR, BTF_KIND_FLOAT):
            return True
        if lt.kind in (BTF_KIND_FWD, *_ANY_ENUM):
            ll, tl = essential_name_len(lt.name), essential_name_len(tt.name)
            return ll == 0 or tl == 0 or (ll == tl and lt.name[:ll] == tt.name[:tl])
        if lt.kind == BTF_KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if lt.kind == BTF_KIND_ARRAY:
            local_id, targ_id = lt.elem_type, tt.elem_type
            continue
        return False


def _names_match(local: str, targ: str) -> bool:
    """libbpf's ``bpf_core_names_match`` (an anonymous target matches only anonymous)."""
    if not targ:
        return not local
    return _ess_eq(local, targ)


def types_match(
    local_btf: BTF, local_id: int, targ_btf: BTF, targ_id: int,
    behind_ptr: bool = False, level: int = 32,
) -> bool:  # fmt: skip
    """libbpf's ``__bpf_core_types_match`` (type_matches, Linux 6.1 / libbpf 1.0).

    Stricter than compatibility: same kinds, int size and signedness, array
    lengths, every local member/enumerator present in the target by name,
    members compared recursively unless behind a pointer."""
    if level <= 0:
        raise CORERelocationError("type_matches: types nested too deeply to compare")
    depth = 32
    while True:
        depth -= 1
        if depth < 0:
            raise CORERelocationError("type_matches: type chain deeper than 32 levels")
        local_id, lt = _skip(local_btf, local_id)
        targ_id, tt = _skip(targ_btf, targ_id)
        if not _names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == BTF_KIND_UNKN:
            return lk == tk
        if lk == BTF_KIND_FWD:
            if behind_ptr:
                if lk == tk:
                    return lt.kflag == tt.kflag
                return (tk == BTF_KIND_STRUCT and not lt.kflag) or (
                    tk == BTF_KIND_UNION and lt.kflag
                )
            return lk == tk and lt.kflag == tt.kflag
        if lk in _ANY_ENUM:
            if tk not in _ANY_ENUM or lt.size != tt.size or len(lt.values) > len(tt.values):
                return False
            return all(any(_names_match(lv.name, tv.name) for tv in tt.values) for lv in lt.values)
        if lk in _COMPOSITE:
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == BTF_KIND_FWD and (lk == BTF_KIND_UNION) == tt.kflag
            if lk != tk or len(lt.members) > len(tt.members):
                return False
            for lm in lt.members:
                for tm in tt.members:
                    if not _names_match(lm.name, tm.name):
                        continue
                    if types_match(local_btf, lm.type, targ_btf, tm.type, behind_ptr, level - 1):
                        break
                else:
                    return False
            return True
        if lk == BTF_KIND_INT:
            return (
                lk == tk
                and lt.size == tt.size
                and (lt.int_encoding & BTF_INT_SIGNED) == (tt.int_encoding & BTF_INT_SIGNED)
            )
        if lk == BTF_KIND_PTR:
            if lk != tk:
                return False
            behind_ptr = True
            local_id, targ_id = lt.type, tt.type
            continue
        if lk == BTF_KIND_ARRAY:
            if lk != tk or lt.nelems != tt.nelems:
                return False
            local_id, targ_id = lt.elem_type, tt.elem_type
            continue
        if lk == BTF_KIND_FUNC_PROTO:
            if lk != tk or len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not types_match(local_btf, lp.type, targ_btf, tp.type, behind_ptr, level - 1):
                    return False
            local_id, targ_id = lt.type, tt.type
            continue
        return False  # libbpf: "unexpected kind relocated"


# ------------------------------------------------------------------ matching


class _NoMatch(Exception):
    """Internal: this candidate does not match; the message says why."""


def _match_member(
    local_btf: BTF, local_acc: Accessor, targ_btf: BTF, targ_id: int, spec: Spec
) -> Optional[int]:
    """libbpf's ``bpf_core_match_member``: member ``local_acc`` inside ``targ_id``,
    through anonymous members.  Returns the member's type id; None if absent."""
    targ_id, t = _skip(targ_btf, targ_id)
    if t.kind not in _COMPOSITE:
        return None
    local_member = local_btf.type(local_acc.type_id).members[local_acc.idx]
    for i, m in enumerate(t.members):
        if len(spec.raw) == BPF_CORE_SPEC_MAX_LEN:
            raise CORERelocationError(f"target nesting deeper than {BPF_CORE_SPEC_MAX_LEN}")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found = _match_member(local_btf, local_acc, targ_btf, m.type, spec)
            if found is not None:
                return found
        elif m.name == local_member.name:
            spec.accessors.append(Accessor(targ_id, i, m.name))
            if fields_are_compat(local_btf, local_member.type, targ_btf, m.type):
                return m.type
            spec.accessors.pop()
            lt = local_btf.type(local_btf.skip_mods_and_typedefs(local_member.type))
            tt = targ_btf.type(targ_btf.skip_mods_and_typedefs(m.type))
            raise _NoMatch(
                f"member {m.name!r} of {_what(t)} is {_what(tt)}, incompatible with local "
                f"{_what(lt)}"
            )
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return None


def match_spec(local: Spec, targ_btf: BTF, targ_id: int, rules: Rules = _RULES["libbpf"]) -> Spec:
    """libbpf's ``bpf_core_spec_match``: the target spec; raises _NoMatch with a reason."""
    targ = Spec(targ_btf, targ_id, local.kind)
    if local.kind in TYPE_KINDS:
        if local.kind == BPF_CORE_TYPE_MATCHES:
            ok = types_match(local.btf, local.root_type_id, targ_btf, targ_id, level=rules.depth)
            if not ok:
                raise _NoMatch("types do not match (type_matches rules)")
        elif not types_are_compat(
            local.btf, local.root_type_id, targ_btf, targ_id, level=rules.depth
        ):
            raise _NoMatch("types are not compatible")
        return targ
    lacc = local.accessors[0]
    if local.kind in ENUMVAL_KINDS:
        tid, t = _skip(targ_btf, targ_id)
        if t.kind not in _ANY_ENUM:
            raise _NoMatch(f"{_what(t)} is not an enum")
        for i, value in enumerate(t.values):
            if _ess_eq(lacc.name or "", value.name):
                targ.accessors.append(Accessor(tid, i, value.name))
                targ.raw.append(i)
                return targ
        raise _NoMatch(f"{_what(t)} has no enumerator {lacc.name!r}")
    for i, acc in enumerate(local.accessors):
        targ_id, t = _skip(targ_btf, targ_id)
        if acc.name:
            found = _match_member(local.btf, acc, targ_btf, targ_id, targ)
            if found is None:
                raise _NoMatch(f"{_what(t)} has no member {acc.name!r}")
            targ_id = found
            continue
        if i > 0:
            if t.kind != BTF_KIND_ARRAY:
                raise _NoMatch(f"{_what(t)} is not an array (local index [{acc.idx}])")
            if not _is_flex_arr(targ_btf, targ.accessors[-1], t) and acc.idx >= t.nelems:
                raise _NoMatch(f"array index {acc.idx} out of bounds [0, {t.nelems})")
            targ_id = targ_btf.skip_mods_and_typedefs(t.elem_type)
        if len(targ.raw) == BPF_CORE_SPEC_MAX_LEN:
            raise CORERelocationError(f"target nesting deeper than {BPF_CORE_SPEC_MAX_LEN}")
        targ.accessors.append(Accessor(targ_id, acc.idx, None))
        targ.raw.append(acc.idx)
        targ.bit_offset += acc.idx * _size(targ_btf, targ_id) * 8
    return targ


# ------------------------------------------------------------------ values


class _Poison(Exception):
    """Internal: libbpf's -EUCLEAN, "poison this instruction"."""


class _Val:
    __slots__ = ("val", "size", "type_id", "validate")

    def __init__(self, val: int, size: int = 0, type_id: int = 0, validate: bool = True):
        self.val, self.size, self.type_id, self.validate = val, size, type_id, validate


def _field_value(spec: Optional[Spec], kind: int) -> _Val:
    """libbpf's ``bpf_core_calc_field_relo`` for one side."""
    if kind == BPF_CORE_FIELD_EXISTS:
        return _Val(int(spec is not None))
    if spec is None:
        raise _Poison
    btf = spec.btf
    acc = spec.accessors[-1]
    if not acc.name:  # an array element, or the root itself
        if kind == BPF_CORE_FIELD_BYTE_OFFSET:
            return _Val(spec.bit_offset // 8, _size(btf, acc.type_id), acc.type_id)
        if kind == BPF_CORE_FIELD_BYTE_SIZE:
            return _Val(_size(btf, acc.type_id))
        raise CORERelocationError(
            f"{KIND_NAMES[kind]} relocation cannot be applied to an array element"
        )
    t = btf.type(acc.type_id)
    m = t.members[acc.idx]
    field_type_id, mt = _skip(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size
        if byte_sz <= 0:
            raise CORERelocationError(f"bitfield {m.name!r} has a type without size")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CORERelocationError(
                    f"bitfield {m.name!r} cannot be read with a single 64-bit load"
                )
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = _size(btf, field_type_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if kind == BPF_CORE_FIELD_BYTE_OFFSET:
        if bitfield:
            return _Val(byte_off, validate=False)
        return _Val(byte_off, byte_sz, field_type_id)
    if kind == BPF_CORE_FIELD_BYTE_SIZE:
        return _Val(byte_sz, validate=not bitfield)
    if kind == BPF_CORE_FIELD_SIGNED:
        signed = (mt.kind in _ANY_ENUM and mt.kflag) or (
            mt.kind == BTF_KIND_INT and bool(mt.int_encoding & BTF_INT_SIGNED)
        )
        return _Val(int(signed))
    if kind == BPF_CORE_FIELD_LSHIFT_U64:
        return _Val((64 - (bit_off + bit_sz - byte_off * 8)) & 0xFFFFFFFF, validate=not bitfield)
    return _Val((64 - bit_sz) & 0xFFFFFFFF)  # RSHIFT_U64 (u32 arithmetic, as libbpf)


def _type_value(spec: Optional[Spec], kind: int) -> _Val:
    """libbpf's ``bpf_core_calc_type_relo``: a missing type gives 0, never poison."""
    if spec is None:
        return _Val(0)
    if kind == BPF_CORE_TYPE_ID_TARGET:
        return _Val(spec.root_type_id, validate=False)
    if kind in (BPF_CORE_TYPE_EXISTS, BPF_CORE_TYPE_MATCHES):
        return _Val(1)
    return _Val(_size(spec.btf, spec.root_type_id))


def _enum_value(spec: Optional[Spec], kind: int) -> _Val:
    """libbpf's ``bpf_core_calc_enumval_relo`` (32-bit values sign-extended to 64)."""
    if kind == BPF_CORE_ENUMVAL_EXISTS:
        return _Val(int(spec is not None))
    if spec is None:
        raise _Poison
    acc = spec.accessors[0]
    t = spec.btf.type(acc.type_id)
    value = t.values[acc.idx].value
    if t.kind == BTF_KIND_ENUM:
        value &= 0xFFFFFFFF
        if value & 0x80000000:
            value -= 1 << 32
    return _Val(value & _U64)


def _int_unsigned(t: Type) -> bool:
    # libbpf compares the whole encoding with BTF_INT_SIGNED, not the bit.
    return t.kind == BTF_KIND_INT and t.int_encoding != BTF_INT_SIGNED


def calc_relo(local: Spec, targ: Optional[Spec]) -> CoreResult:
    """libbpf's ``bpf_core_calc_relo``: the before/after values of one relocation."""
    kind = local.kind
    if kind in FIELD_KINDS:
        lv = _field_value(local, kind)
        try:
            tv = _field_value(targ, kind)
        except _Poison:
            return CoreResult(
                lv.val, None, lv.size, 0, lv.type_id, poison=True, validate=lv.validate
            )
        fail = False
        if lv.size != tv.size:
            assert targ is not None
            ot, nt = local.btf.type(lv.type_id), targ.btf.type(tv.type_id)
            both_ptr = ot.kind == BTF_KIND_PTR and nt.kind == BTF_KIND_PTR
            fail = not (both_ptr or (_int_unsigned(ot) and _int_unsigned(nt)))
        return CoreResult(
            lv.val, tv.val, lv.size, tv.size, lv.type_id, tv.type_id,
            validate=lv.validate, fail_memsz_adjust=fail,
            target_type_id=targ.root_type_id if targ else 0,
        )  # fmt: skip
    if kind in TYPE_KINDS:
        lv = _type_value(local, kind)
        tv = _type_value(targ, kind)
        return CoreResult(lv.val, tv.val, validate=lv.validate,
                          target_type_id=targ.root_type_id if targ else 0)  # fmt: skip
    lv = _enum_value(local, kind)
    try:
        tv = _enum_value(targ, kind)
    except _Poison:
        return CoreResult(lv.val, None, poison=True)
    return CoreResult(lv.val, tv.val, target_type_id=targ.root_type_id if targ else 0)


# ------------------------------------------------------------------ the engine

ModuleSource = tuple[str, Union[BTF, Callable[[], BTF]]]


def module_sources(base: BTF, directory: str = "/sys/kernel/btf") -> list[ModuleSource]:
    """Every module's split BTF in ``directory`` (Linux 5.11+), each read only when
    a relocation needs it (see :class:`CoreEngine`)."""
    import os

    try:
        names = sorted(n for n in os.listdir(directory) if n != "vmlinux")
    except OSError:
        return []

    def loader(path: str) -> Callable[[], BTF]:
        return lambda: BTF.from_file(path, base=base)

    return [(name, loader(os.path.join(directory, name))) for name in names]


class _Cand:
    __slots__ = ("btf", "btf_name", "type_id")

    def __init__(self, btf: BTF, btf_name: str, type_id: int) -> None:
        self.btf, self.btf_name, self.type_id = btf, btf_name, type_id


class CoreEngine:
    """Relocates against one target: vmlinux BTF, and module BTF only when needed.

    ``modules`` are ``(name, BTF or a function returning it)``; they are read
    only for a local type that has no candidate in vmlinux (libbpf's order),
    so a corrupt module cannot break a relocation that does not need it."""

    def __init__(
        self,
        local_btf: BTF,
        target_btf: BTF,
        *,
        modules: Sequence[ModuleSource] = (),
        rules: Union[str, Rules] = "libbpf",
    ) -> None:
        self.local_btf = local_btf
        self.target_btf = target_btf
        self.rules = Rules.get(rules)
        self._module_sources = list(modules)
        self._modules: Optional[list[tuple[str, BTF]]] = None
        self._cands: dict[int, list[_Cand]] = {}
        self._named: dict[tuple[int, str], list[int]] = {}  # flavors share one name search
        self._rejected_kind: dict[int, list[Candidate]] = {}

    # -- candidates ---------------------------------------------------------
    def _named_ids(self, btf: BTF, essential: str) -> list[int]:
        key = (id(btf), essential)
        ids = self._named.get(key)
        if ids is None:
            found = set(btf.find(essential)) | set(btf.find_prefix(essential + "___"))
            ids = [
                tid for tid in sorted(found)
                if tid >= btf.start_id and essential_name_len(btf.name_of(tid)) == len(essential)
            ]  # fmt: skip
            self._named[key] = ids
        return ids

    def _module_btfs(self) -> list[tuple[str, BTF]]:
        if self._modules is None:
            loaded = []
            for name, source in self._module_sources:
                try:
                    btf = source if isinstance(source, BTF) else source()
                except (BTFError, OSError) as err:
                    raise CORERelocationError(f"cannot read BTF of module {name}: {err}") from None
                loaded.append((name, btf))
            self._modules = loaded
        return self._modules

    def _find(self, local_id: int, btf: BTF, btf_name: str, ess: str) -> list[_Cand]:
        local = self.local_btf.type(local_id)
        out = []
        for tid in self._named_ids(btf, ess):
            t = btf.type(tid)
            ok = t.kind == local.kind if self.rules.exact_kind else _kind_core_compat(local, t)
            if ok:
                out.append(_Cand(btf, btf_name, tid))
            else:
                self._rejected_kind.setdefault(local_id, []).append(
                    Candidate(btf_name, tid, t.name, t.kind_name, False,
                              f"kind {t.kind_name}, local type is {local.kind_name}")
                )  # fmt: skip
        return out

    def candidates(self, local_id: int) -> list[_Cand]:
        """libbpf's ``bpf_core_find_cands``: vmlinux first, modules only if it has none."""
        cands = self._cands.get(local_id)
        if cands is None:
            name = self.local_btf.type(local_id).name
            if not name:
                raise CORERelocationError(
                    f"local type #{local_id} is anonymous: CO-RE cannot search candidates for it"
                )
            ess = essential_name(name)
            cands = self._find(local_id, self.target_btf, "vmlinux", ess)
            if not cands:
                for mod_name, mod_btf in self._module_btfs():
                    cands += self._find(local_id, mod_btf, mod_name, ess)
            self._cands[local_id] = cands
        return cands

    # -- relocation ---------------------------------------------------------
    def relocate(self, relo: CoreRelo) -> CoreResult:
        """libbpf's ``bpf_core_calc_relo_insn``; raises CORERelocationError on
        ambiguity or a malformed relocation."""
        local = parse_spec(self.local_btf, relo.type_id, relo.access, relo.kind)
        if relo.kind == BPF_CORE_TYPE_ID_LOCAL:
            return CoreResult(relo.type_id, relo.type_id, validate=False)
        cands = self.candidates(relo.type_id)
        report: list[Candidate] = list(self._rejected_kind.get(relo.type_id, ()))
        chosen: Optional[CoreResult] = None
        chosen_spec: Optional[Spec] = None
        chosen_cand: Optional[_Cand] = None
        kept: list[_Cand] = []
        for cand in cands:
            t = cand.btf.type(cand.type_id)
            try:
                targ = match_spec(local, cand.btf, cand.type_id, self.rules)
            except _NoMatch as why:
                report.append(Candidate(cand.btf_name, cand.type_id, t.name, t.kind_name,
                                        False, str(why)))  # fmt: skip
                continue
            except CORERelocationError as err:
                raise CORERelocationError(
                    f"error matching candidate [{cand.type_id}] {_what(t)}: {err}"
                ) from None
            report.append(Candidate(cand.btf_name, cand.type_id, t.name, t.kind_name, True,
                                    targ.format()))  # fmt: skip
            result = calc_relo(local, targ)
            if chosen is None:
                chosen, chosen_spec, chosen_cand = result, targ, cand
            else:
                assert chosen_spec is not None and chosen_cand is not None
                first = f"[{chosen_cand.type_id}] {chosen_cand.btf.type(chosen_cand.type_id).name}"
                if targ.bit_offset != chosen_spec.bit_offset:
                    raise CORERelocationError(
                        f"ambiguous: field offset differs between candidates {first} "
                        f"(bit {chosen_spec.bit_offset}) and [{cand.type_id}] {t.name} "
                        f"(bit {targ.bit_offset})"
                    )
                if (result.poison, result.new_val) != (chosen.poison, chosen.new_val):
                    raise CORERelocationError(
                        f"ambiguous: candidates {first} and [{cand.type_id}] {t.name} give "
                        f"{_show(chosen)} and {_show(result)}"
                    )
            kept.append(cand)
        if self.rules.narrow and kept:
            self._cands[relo.type_id] = kept
        if chosen is None:
            chosen = calc_relo(local, None)
            if not cands:
                ess = essential_name(self.local_btf.type(relo.type_id).name)
                why = f"the kernel has no type named {ess!r}"
            else:
                why = "; ".join(f"[{c.type_id}] {c.reason}" for c in report if not c.matched)
            chosen = _replace(chosen, reason=why)
        elif chosen_spec is not None:
            chosen = _replace(chosen, target_spec=chosen_spec.format())
        return _replace(chosen, candidates=tuple(report))


def _show(r: CoreResult) -> str:
    return "failure" if r.poison else str(r.new_val)


def _replace(r: CoreResult, **changes: object) -> CoreResult:
    return r._replace(**changes)


# ------------------------------------------------------------------ words


def describe(local_btf: BTF, relo: CoreRelo) -> str:
    """``task_struct___x.__state (0:0, byte_off)`` for messages."""
    root = local_btf.type(relo.type_id)
    path = field_path(local_btf, relo)
    name = root.name or f"<anon #{relo.type_id}>"
    sep = "::" if relo.kind in ENUMVAL_KINDS else "."
    what = f"{name}{sep}{path}" if path else name
    return f"{what} ({relo.access}, {KIND_NAMES[relo.kind]})"


def field_path(local_btf: BTF, relo: CoreRelo) -> str:
    """Member path of a relocation, dots between levels, ``[i]`` for array indices
    (anonymous members are not named: ``a.b`` reaches ``b`` through them)."""
    if relo.kind in TYPE_KINDS:
        return ""
    spec = parse_spec(local_btf, relo.type_id, relo.access, relo.kind)
    if relo.kind in ENUMVAL_KINDS:
        return spec.accessors[0].name or ""
    text = "" if spec.raw[0] == 0 else f"[{spec.raw[0]}]"
    for acc in spec.accessors[1:]:
        if acc.name is None:
            text += f"[{acc.idx}]"
        else:
            text += f".{acc.name}" if text else acc.name
    return text


def poison_insns(insn: isa.Instruction, what: str) -> list[isa.Instruction]:
    """libbpf's ``bpf_core_poison_insn``; an LD_IMM64 becomes two poisoned calls."""
    call = isa.Instruction(isa.BPF_JMP | isa.BPF_CALL, imm=POISON_IMM, comment=what)
    return [call, call] if insn.is_ld_imm64 else [call]


def patch_insn(insn: isa.Instruction, result: CoreResult, what: str) -> list[isa.Instruction]:
    """libbpf's ``bpf_core_patch_insn``: the instruction(s) replacing ``insn``.

    A poisoned LD_IMM64 gives two instructions (its two slots), like libbpf."""
    if result.poison:
        return poison_insns(insn, what)
    assert result.new_val is not None
    orig, new = result.orig_val, result.new_val
    cls = insn.cls
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        if insn.opcode & isa.BPF_X:
            raise CORERelocationError(f"{what}: ALU instruction with a register operand")
        if result.validate and (_s32(insn.imm) & _U64) != orig:
            raise CORERelocationError(
                f"{what}: instruction immediate {insn.imm} is not the local value {orig}"
            )
        return [insn.with_(imm=_s32(new))]
    if cls in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX):
        if result.validate and (insn.off & _U64) != orig:
            raise CORERelocationError(
                f"{what}: instruction offset {insn.off} is not the local value {orig}"
            )
        if new > _SHRT_MAX:
            raise CORERelocationError(f"{what}: offset {new} does not fit in 16 bits")
        if result.fail_memsz_adjust:
            return poison_insns(insn, what)
        insn = insn.with_(off=new)
        if result.orig_sz != result.new_sz:
            if insn.mem_size != result.orig_sz:
                raise CORERelocationError(
                    f"{what}: instruction moves {insn.mem_size} bytes, field is {result.orig_sz}"
                )
            try:
                size = isa.size_from_bytes(result.new_sz)
            except ValueError:
                raise CORERelocationError(
                    f"{what}: cannot load a {result.new_sz}-byte field"
                ) from None
            insn = insn.with_(opcode=(insn.opcode & ~0x18) | size)
        return [insn]
    if insn.is_ld_imm64:
        if insn.src != 0 or insn.off != 0:
            raise CORERelocationError(f"{what}: LD_IMM64 has an unexpected form")
        if result.validate and (insn.imm & _U64) != orig:
            raise CORERelocationError(
                f"{what}: instruction immediate {insn.imm} is not the local value {orig}"
            )
        return [insn.with_(imm=new)]
    raise CORERelocationError(f"{what}: cannot relocate instruction with opcode {insn.opcode:#x}")


def poison_reason(result: CoreResult) -> str:
    """Why an instruction was poisoned, for people."""
    if result.fail_memsz_adjust:
        return (
            f"the field is {result.new_sz} bytes on this kernel but {result.orig_sz} locally, "
            "and only unsigned integers and pointers may change width"
        )
    return result.reason or "not found on this kernel"
