"""``pybpf btf show TYPE``: a type as C with pahole-style layout comments.

For hosts without pahole (dwarves), and for any kernel through ``--btf``: each member gets
``/* offset size */`` (``/* offset:bit size */`` for bitfields), and the struct gets pahole's
``XXX N bytes hole`` / ``XXX N bits hole`` markers, ``--- cacheline N boundary ---`` lines,
the ``size: .., cachelines: .., members: ..`` summary, and the attributes pahole infers
where BTF (which records no alignment) shows their effect: ``__packed__``, and
``__aligned__(N)`` with its ``forced alignments`` count.  Column layout follows pahole 1.2x
(type in 26 columns, comment at column 57 with 8-column tabs), anonymous struct/union members
are expanded in place.  Pure: reads a parsed :class:`~pybpf.btf.BTF` only.
"""

from __future__ import annotations

from pybpf.btf import (
    BTF,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    Type,
)
from pybpf.errors import BTFError

CACHELINE = 64  # pahole's default --cacheline_size on x86-64 and arm64
_TYPE_COL = 26  # pahole: type name field width at nesting depth 1
_COMMENT_COL = 48  # pahole: where " /*" starts, after the tabs of depth 1
_MAX_DEPTH = 32  # nesting/reference depth bound: hostile BTF must not recurse forever

_PREFIX = {BTF_KIND_STRUCT: "struct", BTF_KIND_UNION: "union", BTF_KIND_ENUM: "enum",
           BTF_KIND_ENUM64: "enum"}


_MAX_LINES = 100_000  # output bound: nested anonymous types must not explode exponentially


def type_name(btf: BTF, type_id: int, depth: int = 0) -> str:
    """The C spelling of a type as pahole prints it in a member's type column.

    Memoized per type id, so function prototypes that reference each other cost linear
    time even in hostile BTF (without it, nested parameter lists are exponential)."""
    memo: dict[int, str] = btf.__dict__.setdefault("_show_names", {})
    name = memo.get(type_id)
    if name is not None:
        return name
    busy: set[int] = btf.__dict__.setdefault("_show_busy", set())
    if type_id in busy or depth > _MAX_DEPTH:
        raise BTFError(f"type id {type_id}: reference loop")
    busy.add(type_id)
    try:
        name = memo[type_id] = _type_name(btf, type_id, depth)
    finally:
        busy.discard(type_id)
    return name


def _type_name(btf: BTF, type_id: int, depth: int) -> str:
    t = btf.type(type_id)
    k = t.kind
    if type_id == 0:
        return "void"
    if k in (BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_TYPEDEF):
        return t.name
    if k in _PREFIX:
        return f"{_PREFIX[k]} {t.name}" if t.name else f"{_PREFIX[k]} {{...}}"
    if k == BTF_KIND_FWD:
        return f"{'union' if t.kflag else 'struct'} {t.name}"
    if k == BTF_KIND_PTR:
        target = btf.type(t.type)
        if target.kind == BTF_KIND_FUNC_PROTO:
            return f"{type_name(btf, target.type, depth + 1)} (*)({_params(btf, target, depth)})"
        inner = type_name(btf, t.type, depth + 1)
        # pahole puts two spaces before '*' when the pointee is qualified
        return f"{inner}  *" if target.kind in (BTF_KIND_CONST, BTF_KIND_VOLATILE) else \
            f"{inner} *"
    if k == BTF_KIND_CONST:
        return f"const {type_name(btf, t.type, depth + 1)}"
    if k == BTF_KIND_VOLATILE:
        return f"volatile {type_name(btf, t.type, depth + 1)}"
    if k == BTF_KIND_RESTRICT:
        return f"{type_name(btf, t.type, depth + 1)} restrict"
    if k == BTF_KIND_TYPE_TAG:
        return type_name(btf, t.type, depth + 1)
    if k == BTF_KIND_ARRAY:
        return f"{type_name(btf, t.elem_type, depth + 1)}[{t.nelems}]"
    if k == BTF_KIND_FUNC_PROTO:
        return f"{type_name(btf, t.type, depth + 1)} ({_params(btf, t, depth)})"
    return t.name or t.kind_name.lower()


_MAX_NAME = 1 << 16  # a type's C spelling: nested prototypes must not grow it exponentially


def _params(btf: BTF, proto: Type, depth: int) -> str:
    if not proto.params:
        return "void"
    names = []
    total = 0
    for p in proto.params:
        name = "..." if p.type == 0 and not p.name else type_name(btf, p.type, depth + 1)
        total += len(name) + 2
        if total > _MAX_NAME:
            raise BTFError(f"FUNC_PROTO id {proto.id}: C spelling longer than {_MAX_NAME}")
        names.append(name)
    return ", ".join(names)


def _hoists(btf: BTF, type_id: int) -> bool:
    """pahole writes a qualifier of an array or of a function pointer before the type."""
    t = btf.type(type_id)
    return t.kind == BTF_KIND_ARRAY or (
        t.kind == BTF_KIND_PTR and btf.type(t.type).kind == BTF_KIND_FUNC_PROTO)


def _declarator(btf: BTF, type_id: int, name: str) -> tuple[str, str]:
    """(type column, name column) of a member: arrays and function pointers wrap the name."""
    dims = quals = ""
    t = btf.type(type_id)
    for _ in range(_MAX_DEPTH):
        if t.kind in (BTF_KIND_CONST, BTF_KIND_VOLATILE) and _hoists(btf, t.type):
            quals += "const " if t.kind == BTF_KIND_CONST else "volatile "  # pahole hoists it
        elif t.kind == BTF_KIND_ARRAY:
            dims += f"[{t.nelems}]"
            type_id = t.elem_type
            t = btf.type(type_id)
            continue
        else:
            break
        type_id = t.type
        t = btf.type(type_id)
    if t.kind == BTF_KIND_PTR:
        target = btf.type(t.type)
        if target.kind == BTF_KIND_FUNC_PROTO:
            return (quals + type_name(btf, target.type),
                    f"(*{name}{dims})({_params(btf, target, 0)})")
    return quals + type_name(btf, type_id), name + dims


def _member_size(btf: BTF, type_id: int) -> int:
    try:
        return btf.resolve_size(type_id)
    except BTFError:
        return 0


def _anonymous(btf: BTF, type_id: int) -> tuple[str, str, Type | None]:
    """(qualifiers, array dims, struct/union) when a member's type is an anonymous
    struct/union (possibly const/volatile, or an array of one), else ("", "", None)."""
    quals = dims = ""
    for _ in range(_MAX_DEPTH):
        t = btf.type(type_id)
        if t.kind == BTF_KIND_CONST:
            quals += "const "
        elif t.kind == BTF_KIND_VOLATILE:
            quals += "volatile "
        elif t.kind == BTF_KIND_ARRAY:
            dims += f"[{t.nelems}]"
            type_id = t.elem_type
            continue
        elif t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) and not t.name:
            return quals, dims, t
        else:
            break
        type_id = t.type
    return "", "", None


def natural_align(btf: BTF, type_id: int, depth: int = 0) -> int:
    """C alignment of a type as the compiler chose it (1 for packed structs), as pahole infers
    it from BTF: scalars by size (at most 8), arrays by element, structs by member."""
    memo: dict[int, int] = btf.__dict__.setdefault("_show_align", {})
    align = memo.get(type_id)
    if align is not None:
        return align
    if depth > _MAX_DEPTH:
        raise BTFError(f"type id {type_id}: nested too deep")
    memo[type_id] = 1  # provisional, against reference loops
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind == BTF_KIND_ARRAY:
        align = natural_align(btf, t.elem_type, depth + 1)
    elif t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        align = 1 if is_packed(btf, t, depth + 1) else max(
            (natural_align(btf, m.type, depth + 1) for m in t.members), default=1)
    else:
        size = _member_size(btf, t.id) if t.id else 1
        align = max(a for a in (1, 2, 4, 8) if a <= max(min(size, 8), 1))
    memo[type_id] = align
    return align


def is_packed(btf: BTF, t: Type, depth: int = 0) -> bool:
    """pahole's guess of ``__attribute__((__packed__))``: a member below its natural
    alignment, or a size that is not a multiple of the struct's alignment."""
    if t.kind != BTF_KIND_STRUCT or not t.members:
        return False
    memo = btf.__dict__.setdefault("_show_packed", {})
    if t.id in memo:
        return memo[t.id]
    memo[t.id] = False  # provisional, against reference loops
    align = 1
    packed = False
    for m in t.members:
        a = natural_align(btf, m.type, depth + 1)
        align = max(align, a)
        if not m.bitfield_size and (m.bit_offset % 8 or (m.bit_offset // 8) % a):
            packed = True
    packed = packed or t.size % align != 0
    memo[t.id] = packed
    return packed


def _pahole_align(btf: BTF, type_id: int, depth: int = 0) -> int:
    """Natural alignment as pahole computes it to infer ``__aligned__`` (its
    ``tag__natural_alignment``) for a type stripped of typedefs and modifiers: pointers and
    scalars by size (a 16-byte int is 16), arrays by element, structs and unions by their
    widest member, 1 for anything else or empty."""
    memo: dict[int, int] = btf.__dict__.setdefault("_show_pahole_align", {})
    align = memo.get(type_id)
    if align is not None:
        return align
    if depth > _MAX_DEPTH:
        raise BTFError(f"type id {type_id}: nested too deep")
    memo[type_id] = 1  # provisional, against reference loops
    t = btf.type(type_id)
    if type_id == 0:
        align = 1
    elif t.kind == BTF_KIND_PTR:
        align = btf.ptr_size
    elif t.kind in (BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_ENUM, BTF_KIND_ENUM64):
        align = t.size
    elif t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        align = max((_pahole_align(btf, btf.skip_mods_and_typedefs(m.type), depth + 1)
                     for m in t.members), default=1)
    elif t.kind == BTF_KIND_ARRAY:
        align = _pahole_align(btf, btf.skip_mods_and_typedefs(t.elem_type), depth + 1)
    else:
        align = 1
    memo[type_id] = align or 1
    return align or 1


def _infer_alignment(offset: int, natural: int, smallest: int) -> int:
    """pahole's guess of ``__attribute__((__aligned__(N)))`` from BTF, which has no alignment:
    a member (or a struct's end) at ``offset`` while the previous one ended at ``smallest``
    suggests an alignment of the power of two above the gap, if above the natural one;
    the cacheline size when the offset is on a cacheline.  0: none."""
    delta = offset - smallest
    align = 1 << delta.bit_length() if delta > 0 and offset % 2 == 0 else 0
    if align <= natural or align == 1:
        return 0
    if align < CACHELINE and CACHELINE % align == 0 and offset % CACHELINE == 0:
        return CACHELINE
    return align


def forced_alignments(btf: BTF, t: Type) -> tuple[list[int], int]:
    """The ``__aligned__`` pahole infers for each member of struct/union ``t`` and for ``t``
    itself (0: none).  A bitfield of a scalar counts from the start of its storage unit."""
    memo: dict[int, tuple[list[int], int]] = btf.__dict__.setdefault("_show_forced", {})
    if t.id in memo:
        return memo[t.id]
    aligns = []
    smallest = 0
    for m in t.members:
        tid = btf.skip_mods_and_typedefs(m.type)
        size = _member_size(btf, tid)
        if size == 0:
            aligns.append(0)
            continue
        kind = btf.type(tid).kind
        if m.bitfield_size and kind in (BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_ENUM,
                                        BTF_KIND_ENUM64):
            offset = m.bit_offset // (size * 8) * size
        else:
            offset = m.bit_offset // 8
        aligns.append(_infer_alignment(offset, _pahole_align(btf, tid), smallest))
        smallest = offset + size
    own = _infer_alignment(t.size, _pahole_align(btf, t.id), smallest)
    memo[t.id] = aligns, own
    return aligns, own


def _aligned(align: int) -> str:
    return f" __attribute__((__aligned__({align})))" if align else ""


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def tail_padding(btf: BTF, type_id: int) -> int:
    """Bytes after the last member of a struct (0 for anything else), as pahole counts."""
    t = btf.type(btf.skip_mods_and_typedefs(type_id))
    if t.kind != BTF_KIND_STRUCT or not t.members:
        return 0
    end_bits = max(m.bit_offset + (m.bitfield_size or 8 * _member_size(btf, m.type))
                   for m in t.members)
    last = t.members[-1]
    if last.bitfield_size:  # trailing bits of a bitfield's storage unit are not padding
        unit = 8 * (_member_size(btf, last.type) or 1)
        end_bits = max(end_bits, (last.bit_offset // unit + 1) * unit)
    return max(t.size - -(-end_bits // 8), 0)


class _Layout:
    """Accumulates the output lines and the statistics of the outermost struct."""

    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self.lines: list[str] = []
        self.comment_col = _COMMENT_COL
        self.holes = 0
        self.sum_holes = 0
        self.bit_holes = 0
        self.sum_bit_holes = 0
        self.cacheline = 0  # last cacheline boundary announced
        self.sum_members = 0  # bytes of non-bitfield members (top level)
        self.bitfield_bits = 0
        self.paddings = 0  # members that are structs with tail padding
        self.sum_paddings = 0
        self.forced = 0  # members with an inferred __aligned__ (top level)
        self.forced_holes = 0  # ... with a hole before them
        self.sum_forced_holes = 0

    def line(self, depth: int, text: str, comment: str = "") -> None:
        if len(self.lines) > _MAX_LINES:
            raise BTFError(f"type expands to more than {_MAX_LINES} lines (nested loop?)")
        indent = "\t" * depth
        if comment:
            width = self.comment_col - 8 * (depth - 1)
            text = text.ljust(width) if len(text) < width else text
            text = f"{text} /* {comment} */"
        self.lines.append(indent + text)

    def body(self, t: Type, base: int, depth: int) -> None:
        """Members of struct/union ``t`` located at byte ``base`` of the outermost type."""
        if depth > _MAX_DEPTH:
            raise BTFError(f"{t.kind_name} id {t.id}: nested too deep")
        btf = self.btf
        is_struct = t.kind == BTF_KIND_STRUCT
        end_bits = 0  # end of the previous member, in bits from the start of ``t``
        unit_end = -1  # end of the previous bitfield's storage unit (-1: not a bitfield)
        aligns, _ = forced_alignments(btf, t)
        for m, align in zip(t.members, aligns):
            size = _member_size(btf, m.type)
            hole = 0
            if is_struct and m.bit_offset > end_bits:
                hole = self._gap(depth, end_bits, unit_end, m.bit_offset,
                                 m.type if m.bitfield_size else None)
            if align and depth == 1:
                self.forced += 1
                if hole:
                    self.forced_holes += 1
                    self.sum_forced_holes += hole
            attr = _aligned(align)
            unit_end = -1
            offset = base + m.bit_offset // 8
            if depth == 1:
                self._boundary(offset)
            quals, dims, inner = _anonymous(btf, m.type)
            if inner is not None:
                # a member of anonymous struct/union type: expanded in place
                self.line(depth, f"{quals}{_PREFIX[inner.kind]} {{")
                self.body(inner, base + m.bit_offset // 8, depth + 1)
                if dims:  # pahole: one space before the comment, flexible arrays as []
                    self.line(depth, f"}} {m.name}{dims.replace('[0]', '[]')}{attr}; "
                                     f"/* {offset:5} {size:5} */")
                else:
                    self.line(depth, f"}} {m.name}{attr};" if m.name else f"}}{attr};",
                              f"{offset:5} {size:5}")
                # the inner struct's own __aligned__ follows its brace (not a union's);
                # pahole does not count it when it places the comment
                if inner.kind == BTF_KIND_STRUCT and not is_packed(btf, inner):
                    own = _aligned(forced_alignments(btf, inner)[1])
                    self.lines[-1] = self.lines[-1].replace("}", "}" + own, 1)
                pad = tail_padding(btf, m.type) if depth == 1 and not (quals or dims) else 0
                if pad:
                    self._padding(depth, pad)
                if depth == 1:
                    self.sum_members += size
                end_bits = max(end_bits, m.bit_offset + 8 * size)
                continue
            mt = btf.type(m.type)
            if mt.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64) and not mt.name \
                    and not m.bitfield_size:
                self.line(depth, "enum {")
                width = max((len(v.name) for v in mt.values), default=0)
                for v in mt.values:
                    self.line(depth + 1, f"{v.name:<{width}} = {v.value},")
                self.line(depth, f"}} {m.name}{attr};", f"{offset:5} {size:5}")
                if depth == 1:
                    self.sum_members += size
                end_bits = max(end_bits, m.bit_offset + 8 * size)
                continue
            tcol, ncol = _declarator(btf, m.type, m.name)
            if m is t.members[-1] and len(t.members) > 1 and ncol.endswith("[0]"):
                ncol = ncol[:-3] + "[]"  # a flexible array member, as pahole writes it
            width = max(_TYPE_COL - 8 * (depth - 1), 0)
            if m.bitfield_size:
                unit = size * 8 or 8
                unit_off = (m.bit_offset // unit) * unit
                self.line(depth, f"{tcol:<{width}} {ncol}:{m.bitfield_size}{attr};",
                          f"{base + unit_off // 8:5}:{m.bit_offset - unit_off:2} {size:2}")
                end_bits = max(end_bits, m.bit_offset + m.bitfield_size)
                unit_end = unit_off + unit
                self.bitfield_bits += m.bitfield_size
            else:
                self.line(depth, f"{tcol:<{width}} {ncol}{attr};", f"{offset:5} {size:5}")
                end_bits = max(end_bits, m.bit_offset + 8 * size)
                if depth == 1:
                    self.sum_members += size
                pad = tail_padding(btf, m.type) if depth == 1 else 0
                if pad:
                    self._padding(depth, pad)

    def _padding(self, depth: int, pad: int) -> None:
        """A member whose struct type ends in ``pad`` bytes of padding."""
        self.paddings += 1
        self.sum_paddings += pad
        self.lines.append("")
        self.line(depth, f"/* XXX last struct has {_plural(pad, 'byte')} of padding */")
        self.lines.append("")

    def _gap(self, depth: int, end: int, unit_end: int, start: int,
             bitfield_type: int | None) -> int:
        """Holes between a member ending at bit ``end`` and the next starting at ``start``;
        returns the byte hole.

        After a bitfield, the rest of its storage unit is a bit hole and only what lies
        beyond the unit counts as a byte hole; a bitfield that starts a new unit after a
        bit hole is shown as pahole's ``:0`` forced alignment."""
        if len(self.lines) > 1 and self.lines[-1] == "" and \
                "XXX last struct has" in self.lines[-2]:
            self.lines.pop()  # pahole: the hole's comment right under the padding's
        else:
            self.lines.append("")
        if unit_end >= 0:
            bits = min(start, unit_end) - end
            if bits > 0:
                if depth == 1:
                    self.bit_holes += 1
                    self.sum_bit_holes += bits
                self.line(depth, f"/* XXX {_plural(bits, 'bit')} hole, try to pack */")
            byte_gap = (start - unit_end) // 8 if start > unit_end else 0
            if bitfield_type is not None and start < unit_end and bits > 0:
                # unnamed padding bits inside one storage unit, as pahole writes them
                tcol = type_name(self.btf, bitfield_type)
                self.line(depth, f"{tcol:<{max(_TYPE_COL - 8 * (depth - 1), 0)}} :{bits};")
            if bitfield_type is not None and start == unit_end and bits > 0:
                tcol = type_name(self.btf, bitfield_type)
                self.lines.append("")
                self.line(depth, "/* Force alignment to the next boundary: */")
                self.line(depth, f"{tcol:<{max(_TYPE_COL - 8 * (depth - 1), 0)}} :0;")
        else:
            byte_gap = (start - end) // 8
        if byte_gap > 0:
            if depth == 1:
                self.holes += 1
                self.sum_holes += byte_gap
            self.line(depth, f"/* XXX {_plural(byte_gap, 'byte')} hole, try to pack */")
        self.lines.append("")
        return max(byte_gap, 0)

    def _boundary(self, offset: int) -> None:
        line = offset // CACHELINE
        if line > self.cacheline:
            self.cacheline = line
            ago = offset - line * CACHELINE
            text = f"/* --- cacheline {line} boundary ({line * CACHELINE} bytes)"
            text += f" was {ago} bytes ago --- */" if ago else " --- */"
            self.line(1, text)


def _composite(btf: BTF, t: Type) -> str:
    lay = _Layout(btf)
    if t.kind == BTF_KIND_UNION:
        # pahole prints a top-level union without summary, its comments 2 columns left
        lay.comment_col = _COMMENT_COL - 2
        lay.body(t, 0, 1)
        head = f"union {t.name} {{" if t.name else "union {"
        return "\n".join([head, *lay.lines, "};"]) + "\n"
    lay.body(t, 0, 1)
    last = t.members[-1] if t.members else None
    bit_padding = 0
    # end of the last member (bits): for padding
    end_bits = 0
    for m in t.members:
        bits = m.bitfield_size or 8 * _member_size(btf, m.type)
        end_bits = max(end_bits, m.bit_offset + bits)
    end = -(-end_bits // 8)
    cachelines = -(-t.size // CACHELINE)
    summary = [f"size: {t.size}, cachelines: {cachelines}, members: {len(t.members)}"]
    if lay.holes:
        summary.append(f"sum members: {lay.sum_members}, holes: {lay.holes}, "
                       f"sum holes: {lay.sum_holes}")
    elif lay.bit_holes and lay.sum_members:
        summary.append(f"sum members: {lay.sum_members}")
    if lay.bit_holes:
        summary.append(f"sum bitfield members: {lay.bitfield_bits} bits, bit holes: "
                       f"{lay.bit_holes}, sum bit holes: {lay.sum_bit_holes} bits")
    elif lay.bitfield_bits and lay.holes:
        summary.append(f"sum bitfield members: {lay.bitfield_bits} bits "
                       f"({lay.bitfield_bits // 8} bytes)")
    if last is not None and last.bitfield_size:
        unit = 8 * (_member_size(btf, last.type) or 1)
        unit_end = (last.bit_offset // unit + 1) * unit
        unit_end = min(unit_end, t.size * 8)  # a packed struct may end inside the unit
        if unit_end > end_bits:
            bit_padding = unit_end - end_bits
            end = unit_end // 8
    if t.size > end:
        summary.append(f"padding: {t.size - end}")
    if lay.paddings:
        summary.append(f"paddings: {lay.paddings}, sum paddings: {lay.sum_paddings}")
    if bit_padding:
        summary.append(f"bit_padding: {bit_padding} bits")
    if lay.forced:
        summary.append(f"forced alignments: {lay.forced}" + (
            f", forced holes: {lay.forced_holes}, sum forced holes: {lay.sum_forced_holes}"
            if lay.forced_holes else ""))
    if t.size % CACHELINE:
        summary.append(f"last cacheline: {t.size % CACHELINE} bytes")
    head = f"{_PREFIX[t.kind]} {t.name} {{" if t.name else f"{_PREFIX[t.kind]} {{"
    out = [head, *lay.lines]
    if out[-1] != "":
        out.append("")
    out += [f"\t/* {s} */" for s in summary]
    if is_packed(btf, t):
        out.append("} __attribute__((__packed__));")
    else:
        out.append("}" + _aligned(forced_alignments(btf, t)[1]) + ";")
    return "\n".join(out) + "\n"


def _enum(t: Type) -> str:
    width = max((len(v.name) for v in t.values), default=0)
    head = f"enum {t.name} {{" if t.name else "enum {"
    lines = [head] + [f"\t{v.name:<{width}} = {v.value}," for v in t.values] + ["};"]
    return "\n".join(lines) + "\n"


def resolve_type(btf: BTF, spec: str) -> int:
    """A type id from "42", "task_struct", "struct task_struct", "enum pid_type", ..."""
    spec = spec.strip()
    if spec.isdigit():
        tid = int(spec)
        btf.type(tid)  # range check
        return tid
    kinds = {"struct": (BTF_KIND_STRUCT,), "union": (BTF_KIND_UNION,),
             "enum": (BTF_KIND_ENUM, BTF_KIND_ENUM64), "typedef": (BTF_KIND_TYPEDEF,)}
    word, _, rest = spec.partition(" ")
    if word in kinds and rest.strip():
        name, order = rest.strip(), kinds[word]
    else:
        name = spec
        order = (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_ENUM64,
                 BTF_KIND_TYPEDEF, BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_FUNC, BTF_KIND_VAR,
                 BTF_KIND_DATASEC, BTF_KIND_FWD)
    ids = btf.find(name)
    for kind in order:
        for tid in ids:
            if btf.kind_of(tid) == kind:
                return tid
    raise BTFError(f"type {spec!r} not found in BTF")


def show(btf: BTF, spec: str) -> str:
    """The text ``pybpf btf show`` prints for ``spec`` (a type name or id)."""
    t = btf.type(resolve_type(btf, spec))
    k = t.kind
    if k in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        return _composite(btf, t)
    if k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
        return _enum(t)
    if k == BTF_KIND_TYPEDEF:
        tcol, ncol = _declarator(btf, t.type, t.name)
        return f"typedef {tcol} {ncol};\n"
    if k == BTF_KIND_FUNC:
        proto = btf.type(t.type)
        return f"{type_name(btf, proto.type)} {t.name}({_params(btf, proto, 0)});\n"
    if k == BTF_KIND_VAR:
        tcol, ncol = _declarator(btf, t.type, t.name)
        return f"{tcol} {ncol};\n"
    if k == BTF_KIND_DATASEC:
        lines = [f"SEC(\"{t.name}\") /* size: {t.size} */"]
        for s in t.secinfos:
            v = btf.type(s.type)
            tcol, ncol = _declarator(btf, v.type, v.name) if v.kind == BTF_KIND_VAR else \
                (v.kind_name, v.name)
            lines.append(f"\t{tcol} {ncol}; /* {s.offset:5} {s.size:5} */")
        return "\n".join(lines) + "\n"
    if k == BTF_KIND_FWD:
        return f"{type_name(btf, t.id)};\n"
    return f"/* {t.kind_name} */ {type_name(btf, t.id)}; /* size: {_member_size(btf, t.id)} */\n"
