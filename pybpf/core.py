"""CO-RE relocation: local BTF + access string in, target value out (pure).

This follows libbpf's ``relo_core.c`` step by step, so it gives libbpf's
answers: parse the local access spec, find target candidates whose
*essential name* (the name without a ``___flavor`` suffix) equals the local
one, match the spec against each candidate member by member (by name,
through anonymous members, with compatible types), compute the relocated
value, insist that all matching candidates agree, and patch the
instruction.  A field that does not exist poisons the instruction with
``call 0xbad2310`` (libbpf's convention): the verifier only complains if that
code is reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

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
from .errors import CORERelocationError

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
FIELD_KINDS = frozenset(range(BPF_CORE_FIELD_BYTE_OFFSET, BPF_CORE_FIELD_RSHIFT_U64 + 1))
TYPE_KINDS = frozenset(
    {BPF_CORE_TYPE_ID_LOCAL, BPF_CORE_TYPE_ID_TARGET, BPF_CORE_TYPE_EXISTS,
     BPF_CORE_TYPE_MATCHES, BPF_CORE_TYPE_SIZE}
)  # fmt: skip
ENUMVAL_KINDS = frozenset({BPF_CORE_ENUMVAL_EXISTS, BPF_CORE_ENUMVAL_VALUE})

# What libbpf writes over an instruction it cannot relocate.
POISON_IMM = 0xBAD2310
_COMPOSITE = (BTF_KIND_STRUCT, BTF_KIND_UNION)
_ANY_ENUM = (BTF_KIND_ENUM, BTF_KIND_ENUM64)


@dataclass(frozen=True)
class CoreRelo:
    """One relocation record, as in ``struct bpf_core_relo`` (insn as an index)."""

    insn: int
    type_id: int  # local root type id
    access: str
    kind: int


@dataclass
class Accessor:
    type_id: int
    idx: int
    name: Optional[str]


@dataclass
class Spec:
    """A parsed access path against one BTF (libbpf's ``struct bpf_core_spec``)."""

    btf: BTF
    root_type_id: int
    kind: int
    raw: list[int]
    accessors: list[Accessor] = field(default_factory=list)
    bit_offset: int = 0


@dataclass(frozen=True)
class CoreResult:
    """The outcome of one relocation (libbpf's ``struct bpf_core_relo_res``)."""

    orig_val: int
    new_val: Optional[int]  # None: the target lacks it (instruction poisoned)
    orig_sz: int = 0
    new_sz: int = 0
    poison: bool = False
    fail_memsz_adjust: bool = False
    target_type_id: int = 0


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


def _names_match(a: str, b: str) -> bool:
    return essential_name(a) == essential_name(b)


def parse_spec(btf: BTF, type_id: int, access: str, kind: int) -> Spec:
    """libbpf's ``bpf_core_parse_spec``: walk ``access`` ("0:1:2") over ``type_id``."""
    try:
        raw = [int(part) for part in access.split(":")]
    except ValueError:
        raise CORERelocationError(f"malformed access string {access!r}") from None
    if not raw or any(i < 0 for i in raw):
        raise CORERelocationError(f"malformed access string {access!r}")
    spec = Spec(btf, type_id, kind, raw)
    if kind in TYPE_KINDS:
        if raw != [0]:
            raise CORERelocationError(f"type relocation needs access '0', got {access!r}")
        return spec
    type_id = btf.skip_mods_and_typedefs(type_id)
    t = btf.type(type_id)
    if kind in ENUMVAL_KINDS:
        if t.kind not in _ANY_ENUM or len(raw) != 1 or raw[0] >= len(t.values):
            raise CORERelocationError(f"enum value access {access!r} invalid for {t.name!r}")
        spec.accessors.append(Accessor(type_id, raw[0], t.values[raw[0]].name))
        return spec
    if kind not in FIELD_KINDS:
        raise CORERelocationError(f"unknown CO-RE relocation kind {kind}")
    size = btf.resolve_size(type_id)
    spec.accessors.append(Accessor(type_id, raw[0], None))
    spec.bit_offset = raw[0] * size * 8
    for idx in raw[1:]:
        type_id = btf.skip_mods_and_typedefs(type_id)
        t = btf.type(type_id)
        if t.kind in _COMPOSITE:
            if idx >= len(t.members):
                raise CORERelocationError(f"{t.name!r} has no member #{idx}")
            member = t.members[idx]
            spec.bit_offset += member.bit_offset
            if member.name:
                spec.accessors.append(Accessor(type_id, idx, member.name))
            type_id = member.type
        elif t.kind == BTF_KIND_ARRAY:
            elem_id = btf.skip_mods_and_typedefs(t.elem_type)
            flex = _is_flex_array(btf, spec, t)
            if not flex and idx >= t.nelems:
                raise CORERelocationError(f"array index {idx} out of [0, {t.nelems})")
            spec.accessors.append(Accessor(type_id, idx, None))
            spec.bit_offset += idx * btf.resolve_size(elem_id) * 8
            type_id = elem_id
        else:
            raise CORERelocationError(
                f"access {access!r}: step into {t.kind_name} {t.name!r} is not a struct or array"
            )
    return spec


def _is_flex_array(btf: BTF, spec: Spec, array: Type) -> bool:
    """A zero-length array that is the last member of its struct (``char data[]``)."""
    if array.nelems != 0 or len(spec.accessors) < 1:
        return False
    last = spec.accessors[-1]
    parent = btf.type(last.type_id)
    return parent.kind in _COMPOSITE and last.idx == len(parent.members) - 1


def named_candidates(target_btf: BTF, essential: str) -> list[int]:
    """Target type ids whose essential name is ``essential`` (any kind)."""
    ids = target_btf.find(essential) + target_btf.find_prefix(essential + "___")
    return [
        tid for tid in sorted(set(ids))
        if essential_name_len(target_btf.type(tid).name) == len(essential)
    ]  # fmt: skip


def find_candidates(
    local_btf: BTF, local_id: int, target_btf: BTF, named: Optional[list[int]] = None
) -> list[int]:
    """Target type ids whose essential name and kind match the local root type."""
    local = local_btf.type(local_id)
    if not local.name:
        raise CORERelocationError(f"local type #{local_id} is anonymous: no CO-RE candidates")
    if named is None:
        named = named_candidates(target_btf, essential_name(local.name))
    return [tid for tid in named if _kind_core_compat(local, target_btf.type(tid))]


def types_are_compat(local_btf: BTF, local_id: int, targ_btf: BTF, targ_id: int) -> bool:
    """libbpf's ``bpf_core_types_are_compat`` (kind-level, names not compared)."""
    for _ in range(32):
        local_id = local_btf.skip_mods_and_typedefs(local_id)
        targ_id = targ_btf.skip_mods_and_typedefs(targ_id)
        lt, tt = local_btf.type(local_id), targ_btf.type(targ_id)
        if not _kind_core_compat(lt, tt):
            return False
        if lt.kind in (BTF_KIND_UNKN, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_FWD, *_ANY_ENUM):
            return True
        if lt.kind == BTF_KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if lt.kind == BTF_KIND_FLOAT:
            return True
        if lt.kind == BTF_KIND_PTR:
            local_id, targ_id = lt.type, tt.type
        elif lt.kind == BTF_KIND_ARRAY:
            local_id, targ_id = lt.elem_type, tt.elem_type
        elif lt.kind == BTF_KIND_FUNC_PROTO:
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not types_are_compat(local_btf, lp.type, targ_btf, tp.type):
                    return False
            local_id, targ_id = lt.type, tt.type
        else:
            return False
    return False  # deeper than libbpf's recursion limit


def fields_are_compat(local_btf: BTF, local_id: int, targ_btf: BTF, targ_id: int) -> bool:
    """libbpf's ``bpf_core_fields_are_compat``: may a local field read a target one?"""
    for _ in range(32):
        local_id = local_btf.skip_mods_and_typedefs(local_id)
        targ_id = targ_btf.skip_mods_and_typedefs(targ_id)
        lt, tt = local_btf.type(local_id), targ_btf.type(targ_id)
        if lt.kind in _COMPOSITE and tt.kind in _COMPOSITE:
            return True
        if not _kind_core_compat(lt, tt):
            return False
        if lt.kind in (BTF_KIND_PTR, BTF_KIND_FLOAT):
            return True
        if lt.kind in (BTF_KIND_FWD, *_ANY_ENUM):
            return _names_match(lt.name, tt.name)
        if lt.kind == BTF_KIND_INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if lt.kind == BTF_KIND_ARRAY:
            local_id, targ_id = lt.elem_type, tt.elem_type
            continue
        return False
    return False


def _match_member(
    local_btf: BTF, local_acc: Accessor, targ_btf: BTF, targ_id: int, spec: Spec, depth: int = 0
) -> Optional[int]:
    """Find member ``local_acc.name`` in target ``targ_id``, through anonymous members.

    Returns the member's type id, or None.  Appends accessors and adds bit
    offsets to ``spec`` as it goes (undone on failure), like libbpf."""
    if depth > 32:
        return None
    local_member = local_btf.type(local_acc.type_id).members[local_acc.idx]
    targ_id = targ_btf.skip_mods_and_typedefs(targ_id)
    t = targ_btf.type(targ_id)
    if t.kind not in _COMPOSITE:
        return None
    for i, m in enumerate(t.members):
        saved_offset, saved_len = spec.bit_offset, len(spec.accessors)
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            if targ_btf.type(targ_btf.skip_mods_and_typedefs(m.type)).kind in _COMPOSITE:
                spec.accessors.append(Accessor(targ_id, i, None))
                found = _match_member(local_btf, local_acc, targ_btf, m.type, spec, depth + 1)
                if found is not None:
                    return found
        elif m.name == local_acc.name:
            spec.accessors.append(Accessor(targ_id, i, m.name))
            if fields_are_compat(local_btf, local_member.type, targ_btf, m.type):
                return m.type
            spec.raw.pop()
            del spec.accessors[saved_len:]
            spec.bit_offset = saved_offset
            return None
        spec.raw.pop()
        del spec.accessors[saved_len:]
        spec.bit_offset = saved_offset
    return None


def match_spec(local: Spec, targ_btf: BTF, targ_id: int) -> Optional[Spec]:
    """libbpf's ``bpf_core_spec_match``: the target spec, or None if no match."""
    targ = Spec(targ_btf, targ_id, local.kind, [])
    if local.kind in TYPE_KINDS:
        if local.kind == BPF_CORE_TYPE_MATCHES:
            raise CORERelocationError("type_matches relocations are not supported yet")
        if types_are_compat(local.btf, local.root_type_id, targ_btf, targ_id):
            return targ
        return None
    if local.kind in ENUMVAL_KINDS:
        acc = local.accessors[0]
        tid = targ_btf.skip_mods_and_typedefs(targ_id)
        t = targ_btf.type(tid)
        if t.kind not in _ANY_ENUM:
            return None
        for i, value in enumerate(t.values):
            if _names_match(value.name, acc.name or ""):
                targ.accessors.append(Accessor(tid, i, value.name))
                targ.raw.append(i)
                return targ
        return None
    targ_id_cur = targ_id
    for i, acc in enumerate(local.accessors):
        if i == 0:
            # The root accessor indexes an array of root types: copy it over.
            targ.accessors.append(Accessor(targ_id, acc.idx, None))
            targ.raw.append(acc.idx)
            targ.bit_offset = acc.idx * targ_btf.resolve_size(targ_id) * 8
            continue
        if acc.name:
            found = _match_member(local.btf, acc, targ_btf, targ_id_cur, targ)
            if found is None:
                return None
            targ_id_cur = found
        else:
            local_arr = local.btf.type(local.btf.skip_mods_and_typedefs(acc.type_id))
            tid = targ_btf.skip_mods_and_typedefs(targ_id_cur)
            t = targ_btf.type(tid)
            if t.kind != BTF_KIND_ARRAY or local_arr.kind != BTF_KIND_ARRAY:
                return None
            if not _is_flex_array(targ_btf, targ, t) and acc.idx >= t.nelems:
                return None
            elem = targ_btf.skip_mods_and_typedefs(t.elem_type)
            targ.accessors.append(Accessor(tid, acc.idx, None))
            targ.raw.append(acc.idx)
            targ.bit_offset += acc.idx * targ_btf.resolve_size(elem) * 8
            targ_id_cur = elem
    return targ


@dataclass(frozen=True)
class _FieldValue:
    val: int
    size: int = 0
    type_id: int = 0


def _field_value(spec: Spec, kind: int) -> _FieldValue:
    """libbpf's ``bpf_core_calc_field_relo`` for one side."""
    btf = spec.btf
    acc = spec.accessors[-1]
    if kind == BPF_CORE_FIELD_EXISTS:
        return _FieldValue(1)
    bit_off = spec.bit_offset
    bitfield = False
    bit_sz = 0
    if acc.name is None:
        # The last step is an array element (or the root itself).
        field_type_id = acc.type_id if len(spec.accessors) == 1 else None
        if field_type_id is None:
            arr = btf.type(btf.skip_mods_and_typedefs(acc.type_id))
            field_type_id = arr.elem_type if arr.kind == BTF_KIND_ARRAY else acc.type_id
    else:
        member = btf.type(acc.type_id).members[acc.idx]
        field_type_id = member.type
        bit_sz = member.bitfield_size
        bitfield = bit_sz > 0
    mt_id = btf.skip_mods_and_typedefs(field_type_id)
    mt = btf.type(mt_id)
    byte_sz = btf.resolve_size(mt_id)
    if not bitfield:
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    else:
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CORERelocationError("bitfield cannot be read with a single load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    if kind == BPF_CORE_FIELD_BYTE_OFFSET:
        if bitfield:
            return _FieldValue(byte_off)
        return _FieldValue(byte_off, byte_sz, field_type_id)
    if kind == BPF_CORE_FIELD_BYTE_SIZE:
        return _FieldValue(byte_sz)
    if kind == BPF_CORE_FIELD_SIGNED:
        signed = (mt.kind in _ANY_ENUM and mt.kflag) or (
            mt.kind == BTF_KIND_INT and bool(mt.int_encoding & BTF_INT_SIGNED)
        )
        return _FieldValue(int(signed))
    if kind == BPF_CORE_FIELD_LSHIFT_U64:
        return _FieldValue(64 - (bit_off + bit_sz - byte_off * 8))
    if kind == BPF_CORE_FIELD_RSHIFT_U64:
        return _FieldValue(64 - bit_sz)
    raise CORERelocationError(f"unknown field relocation kind {kind}")


def _unsigned_or_ptr(btf: BTF, type_id: int) -> str:
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind == BTF_KIND_PTR:
        return "ptr"
    if t.kind == BTF_KIND_INT and not t.int_encoding & BTF_INT_SIGNED:
        return "uint"
    return "other"


def calc_relo(local: Spec, targ: Optional[Spec]) -> CoreResult:
    """libbpf's ``bpf_core_calc_relo``: the before/after values of one relocation."""
    kind = local.kind
    if kind in FIELD_KINDS:
        lv = _field_value(local, kind)
        if targ is None:
            if kind == BPF_CORE_FIELD_EXISTS:
                return CoreResult(lv.val, 0)
            return CoreResult(lv.val, None, lv.size, 0, poison=True)
        tv = _field_value(targ, kind)
        fail = False
        if lv.size != tv.size:
            # Only widening or narrowing unsigned integers and pointers keeps the
            # loaded value right (zero extension), as libbpf allows.
            lk = _unsigned_or_ptr(local.btf, lv.type_id)
            tk = _unsigned_or_ptr(targ.btf, tv.type_id)
            fail = not (lk == tk and lk in ("ptr", "uint"))
        return CoreResult(lv.val, tv.val, lv.size, tv.size, fail_memsz_adjust=fail)
    if kind in TYPE_KINDS:
        local_val = _type_value(local.btf, local.root_type_id, kind, local.root_type_id)
        if kind == BPF_CORE_TYPE_ID_LOCAL:
            return CoreResult(local_val, local_val)
        if targ is None:
            if kind in (BPF_CORE_TYPE_EXISTS, BPF_CORE_TYPE_MATCHES):
                return CoreResult(local_val, 0)
            return CoreResult(local_val, None, poison=True)
        return CoreResult(
            local_val,
            _type_value(targ.btf, targ.root_type_id, kind, targ.root_type_id),
            target_type_id=targ.root_type_id,
        )
    # enum values
    lacc = local.accessors[0]
    local_val = _enum_value(local.btf, lacc, kind)
    if targ is None:
        if kind == BPF_CORE_ENUMVAL_EXISTS:
            return CoreResult(local_val, 0)
        return CoreResult(local_val, None, poison=True)
    return CoreResult(local_val, _enum_value(targ.btf, targ.accessors[0], kind))


def _type_value(btf: BTF, type_id: int, kind: int, root: int) -> int:
    if kind in (BPF_CORE_TYPE_ID_LOCAL, BPF_CORE_TYPE_ID_TARGET):
        return root
    if kind in (BPF_CORE_TYPE_EXISTS, BPF_CORE_TYPE_MATCHES):
        return 1
    return btf.resolve_size(type_id)


def _enum_value(btf: BTF, acc: Accessor, kind: int) -> int:
    if kind == BPF_CORE_ENUMVAL_EXISTS:
        return 1
    return btf.type(acc.type_id).values[acc.idx].value


class CoreEngine:
    """Relocates against one target BTF, caching candidate lists per local type."""

    def __init__(self, local_btf: BTF, target_btf: BTF) -> None:
        self.local_btf = local_btf
        self.target_btf = target_btf
        self._cands: dict[int, list[int]] = {}
        self._named: dict[str, list[int]] = {}  # flavors share their essential name's search

    def candidates(self, local_id: int) -> list[int]:
        if local_id not in self._cands:
            name = self.local_btf.type(local_id).name
            if not name:
                raise CORERelocationError(f"local type #{local_id} is anonymous: no candidates")
            ess = essential_name(name)
            if ess not in self._named:
                self._named[ess] = named_candidates(self.target_btf, ess)
            self._cands[local_id] = find_candidates(
                self.local_btf, local_id, self.target_btf, self._named[ess]
            )
        return self._cands[local_id]

    def relocate(self, relo: CoreRelo) -> CoreResult:
        """Compute one relocation; raise CORERelocationError on ambiguity."""
        local = parse_spec(self.local_btf, relo.type_id, relo.access, relo.kind)
        if relo.kind == BPF_CORE_TYPE_ID_LOCAL:
            return calc_relo(local, None)  # the local id is its own answer
        chosen: Optional[CoreResult] = None
        chosen_spec: Optional[Spec] = None
        for cand in self.candidates(relo.type_id):
            targ = match_spec(local, self.target_btf, cand)
            if targ is None:
                continue
            result = calc_relo(local, targ)
            if chosen is None:
                chosen, chosen_spec = result, targ
            elif (result.new_val, result.poison) != (chosen.new_val, chosen.poison):
                assert chosen_spec is not None
                raise CORERelocationError(
                    f"{describe(self.local_btf, relo)}: ambiguous, candidates "
                    f"#{chosen_spec.root_type_id} and #{cand} give {chosen.new_val} "
                    f"and {result.new_val}"
                )
        if chosen is None:
            chosen = calc_relo(local, None)
        return chosen


def describe(local_btf: BTF, relo: CoreRelo) -> str:
    """``task_struct___x.__state (0:1, byte_off)`` for messages."""
    root = local_btf.type(relo.type_id)
    return f"{root.name}.{field_path(local_btf, relo)} ({relo.access}, {KIND_NAMES[relo.kind]})"


def field_path(local_btf: BTF, relo: CoreRelo) -> str:
    """Member path of a relocation, dots between levels, ``[i]`` for array indices."""
    if relo.kind in TYPE_KINDS:
        return ""
    spec = parse_spec(local_btf, relo.type_id, relo.access, relo.kind)
    if relo.kind in ENUMVAL_KINDS:
        return spec.accessors[0].name or ""
    text = ""
    for acc in spec.accessors[1:]:
        if acc.name is None:
            text += f"[{acc.idx}]"
        else:
            text += f".{acc.name}" if text else acc.name
    return text


def patch_insn(insn: isa.Instruction, result: CoreResult, what: str) -> isa.Instruction:
    """libbpf's ``bpf_core_patch_insn``: write the relocated value into ``insn``."""
    if result.poison:
        # Unreachable on this kernel (guarded by field_exists), or a real error
        # the verifier will report at this instruction.
        return isa.Instruction(
            isa.BPF_JMP | isa.BPF_CALL, imm=POISON_IMM, comment=what
        )
    assert result.new_val is not None
    cls = insn.cls
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        if insn.opcode & isa.BPF_X:
            raise CORERelocationError(f"{what}: ALU instruction with a register operand")
        if insn.imm != result.orig_val:
            raise CORERelocationError(
                f"{what}: instruction immediate {insn.imm} is not the local value {result.orig_val}"
            )
        return insn.with_(imm=result.new_val)
    if cls in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX):
        if insn.off != result.orig_val:
            raise CORERelocationError(
                f"{what}: instruction offset {insn.off} is not the local value {result.orig_val}"
            )
        if result.new_val > 0x7FFF:
            raise CORERelocationError(f"{what}: offset {result.new_val} does not fit in 16 bits")
        if result.fail_memsz_adjust:
            raise CORERelocationError(
                f"{what}: field is {result.new_sz} bytes on this kernel but {result.orig_sz} "
                "locally; only unsigned integers and pointers can change width"
            )
        insn = insn.with_(off=result.new_val)
        if result.orig_sz != result.new_sz and result.new_sz:
            try:
                size = isa.size_from_bytes(result.new_sz)
            except ValueError:
                raise CORERelocationError(
                    f"{what}: cannot load a {result.new_sz}-byte field"
                ) from None
            insn = insn.with_(opcode=(insn.opcode & ~0x18) | size)
        return insn
    if insn.is_ld_imm64:
        return insn.with_(imm=result.new_val)
    raise CORERelocationError(f"{what}: cannot relocate instruction with opcode {insn.opcode:#x}")
