"""``pybpf btf dump``: BTF as text, line for line what ``bpftool btf dump file F format raw``
prints (bpftool v7, ``dump_btf_type`` in ``tools/bpf/bpftool/btf.c``, plain-text branch).

Pure: reads a parsed :class:`~pybpf.btf.BTF`, never the kernel.  Records are read straight
from the word array (not through :meth:`BTF.type`, whose cache would hold all ~127k decoded
types of vmlinux in memory); split BTF prints its own types only, numbered after its base's,
as bpftool does with ``-B``.
"""

from __future__ import annotations

import argparse
from typing import Iterator

from pybpf.btf import (
    BTF,
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
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    KIND_NAMES,
)
from pybpf.ints import s32 as _s32

# bpftool's btf_int_enc_str / btf_func_linkage_str / btf_var_linkage_str.
_INT_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_REF_KINDS = frozenset((BTF_KIND_PTR, BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT,
                        BTF_KIND_TYPEDEF, BTF_KIND_TYPE_TAG))


def dump_raw(btf: BTF) -> Iterator[str]:
    """Yield bpftool's raw dump of ``btf``'s own types, one output line at a time."""
    w = btf._words
    offs = btf._offs
    string = btf.string
    names: dict[int, str] = {}

    def q(off: int) -> str:
        """Quoted name as bpftool prints it: 'name' or '(anon)'; memoized per offset."""
        s = names.get(off)
        if s is None:
            s = names[off] = f"'{string(off) or '(anon)'}'" if off else "'(anon)'"
        return s

    tid = btf.start_id
    for off in offs:
        name_off, info, sz = w[off], w[off + 1], w[off + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        head = f"[{tid}] {KIND_NAMES[kind]} {q(name_off)}"
        p = off + 3
        if kind in _REF_KINDS:
            yield f"{head} type_id={sz}"
        elif kind == BTF_KIND_STRUCT or kind == BTF_KIND_UNION:
            yield f"{head} size={sz} vlen={vlen}"
            for i in range(p, p + 3 * vlen, 3):
                bo = w[i + 2]
                if kflag and bo >> 24:
                    yield f"\t{q(w[i])} type_id={w[i + 1]} bits_offset={bo & 0xFFFFFF} " \
                          f"bitfield_size={bo >> 24}"
                else:
                    yield f"\t{q(w[i])} type_id={w[i + 1]} bits_offset=" \
                          f"{bo & 0xFFFFFF if kflag else bo}"
        elif kind == BTF_KIND_FUNC_PROTO:
            yield f"{head} ret_type_id={sz} vlen={vlen}"
            for i in range(p, p + 2 * vlen, 2):
                yield f"\t{q(w[i])} type_id={w[i + 1]}"
        elif kind == BTF_KIND_FUNC:
            yield f"{head} type_id={sz} linkage={_LINKAGE.get(vlen, '(unknown)')}"
        elif kind == BTF_KIND_INT:
            enc = w[p]
            yield (f"{head} size={sz} bits_offset={(enc >> 16) & 0xFF} nr_bits={enc & 0xFF} "
                   f"encoding={_INT_ENC.get((enc >> 24) & 0xF, 'UNKN')}")
        elif kind == BTF_KIND_ARRAY:
            yield f"{head} type_id={w[p]} index_type_id={w[p + 1]} nr_elems={w[p + 2]}"
        elif kind == BTF_KIND_ENUM:
            yield f"{head} encoding={'SIGNED' if kflag else 'UNSIGNED'} size={sz} vlen={vlen}"
            for i in range(p, p + 2 * vlen, 2):
                yield f"\t{q(w[i])} val={_s32(w[i + 1]) if kflag else w[i + 1]}"
        elif kind == BTF_KIND_ENUM64:
            yield f"{head} encoding={'SIGNED' if kflag else 'UNSIGNED'} size={sz} vlen={vlen}"
            for i in range(p, p + 3 * vlen, 3):
                v = w[i + 2] << 32 | w[i + 1]
                if kflag:
                    yield f"\t{q(w[i])} val={v - (1 << 64) if v >> 63 else v}LL"
                else:
                    yield f"\t{q(w[i])} val={v}ULL"
        elif kind == BTF_KIND_FWD:
            yield f"{head} fwd_kind={'union' if kflag else 'struct'}"
        elif kind == BTF_KIND_VAR:
            yield f"{head} type_id={sz}, linkage={_LINKAGE.get(w[p], '(unknown)')}"
        elif kind == BTF_KIND_DATASEC:
            yield f"{head} size={sz} vlen={vlen}"
            for i in range(p, p + 3 * vlen, 3):
                vid = w[i]
                yield (f"\ttype_id={vid} offset={w[i + 1]} size={w[i + 2]} "
                       f"({KIND_NAMES.get(btf.kind_of(vid), 'UNKNOWN')} {q_id(btf, vid)})")
        elif kind == BTF_KIND_FLOAT:
            yield f"{head} size={sz}"
        elif kind == BTF_KIND_DECL_TAG:
            yield f"{head} type_id={sz} component_idx={_s32(w[p])}"
        else:  # pragma: no cover - the parser's index rejects other kinds
            yield head
        tid += 1


def q_id(btf: BTF, type_id: int) -> str:
    """Quoted name of a type id ('(anon)' when it has none)."""
    return f"'{btf.name_of(type_id) or '(anon)'}'"


# ---------------------------------------------------------------------- ``pybpf btf``

BTF_USAGE = """\
pybpf btf dump [--btf FILE] [--base FILE] [--format raw]
                                  every type, as `bpftool btf dump file FILE format raw`
pybpf btf show TYPE [--btf FILE] [--base FILE]
                                  a struct/union/enum/typedef as C, pahole-style comments
"""

_SYSFS_BTF = "/sys/kernel/btf/"


def open_btf(path: str | None, base: str | None = None) -> BTF:
    """The BTF to show: ``path`` (raw, .xz, ELF .BTF) or the running kernel's.

    Module BTF under /sys/kernel/btf/ is split BTF: its base defaults to vmlinux, as
    bpftool does (module BTF needs Linux 5.11)."""
    if path is None:
        return BTF.kernel()
    if base is None and path.startswith(_SYSFS_BTF) and path != _SYSFS_BTF + "vmlinux":
        base = _SYSFS_BTF + "vmlinux"
    return BTF.from_file(path, BTF.from_file(base) if base else None)


def parser(sub: str) -> argparse.ArgumentParser:
    """The parser of ``pybpf btf dump`` or ``pybpf btf show``."""
    if sub == "dump":
        description = ("Print every type of a BTF file, line for line as `bpftool btf dump "
                       "file FILE format raw`.")
    else:
        description = ("Print a struct, union, enum or typedef as C, with pahole's comments: "
                       "offsets and sizes, holes, padding, cachelines, forced alignments.")
    p = argparse.ArgumentParser(prog=f"pybpf btf {sub}", description=description)
    if sub == "show":
        p.add_argument("type", metavar="TYPE",
                       help="a type name ('task_struct', 'struct sk_buff') or id")  # fmt: skip
    p.add_argument("--btf", metavar="FILE",
                   help="BTF file (raw, .xz or ELF); default: the running kernel's")  # fmt: skip
    p.add_argument("--base", metavar="FILE", help="base BTF of a split BTF file")
    if sub == "dump":
        p.add_argument("--format", choices=["raw"], default="raw",
                       help="output format (bpftool's raw dump)")  # fmt: skip
    return p


def main(argv: list[str]) -> int:
    """``pybpf btf dump|show``; errors are BTFError/PyBPFError, printed by the CLI."""
    import sys

    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write("usage:\n" + BTF_USAGE)
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub not in ("dump", "show"):
        sys.stderr.write(f"pybpf: error: unknown btf command {sub!r} (dump, show)\n")
        return 2
    args = parser(sub).parse_args(rest)
    btf = open_btf(args.btf, args.base)
    out = sys.stdout
    if sub == "dump":
        chunk: list[str] = []
        for line in dump_raw(btf):
            chunk.append(line)
            if len(chunk) >= 4096:
                chunk.append("")
                out.write("\n".join(chunk))
                chunk.clear()
        if chunk:
            chunk.append("")
            out.write("\n".join(chunk))
        out.flush()
        return 0
    from pybpf.btf_show import show

    out.write(show(btf, args.type))
    out.flush()
    return 0
