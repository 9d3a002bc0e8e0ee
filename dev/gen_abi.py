"""Write pybpf/abi.py (the kernel's BPF enums) and pybpf/abi_attrs.py (``union bpf_attr``
and info struct layouts, as ctypes structures), from BTF.

    python dev/gen_abi.py            # rewrite both from the newest blob in btf/
    python dev/gen_abi.py --check    # exit 1 if regenerating would change it

The layouts come from the newest kernel BTF in ``btf/`` (pybpf's own parser), so they
are the kernel's by construction, not typed in by hand.  Each enum value and field carries
the oldest reference kernel in ``btf/`` that has it ("<=5.10" when even the oldest has it):
what a caller must know before relying on it.  Every generated layout is checked against
BTF's offsets before the file is written.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pybpf.btf import (  # noqa: E402
    BTF,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_INT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VOLATILE,
)

OUT = REPO / "pybpf" / "abi.py"
OUT_ATTRS = REPO / "pybpf" / "abi_attrs.py"
ENUMS = ["bpf_cmd", "bpf_map_type", "bpf_prog_type", "bpf_attach_type", "bpf_link_type",
         "bpf_stats_type"]  # fmt: skip
# union bpf_attr's members: named ones by name, anonymous ones by their first named field.
ATTRS = {
    "map_type": "MapCreateAttr", "map_fd": "MapElemAttr", "batch": "MapBatchAttr",
    "prog_type": "ProgLoadAttr", "pathname": "ObjAttr", "target_fd": "ProgAttachAttr",
    "test": "TestRunAttr", "start_id": "GetIdAttr", "info": "InfoAttr", "query": "ProgQueryAttr",
    "raw_tracepoint": "RawTracepointAttr", "btf": "BTFLoadAttr",
    "task_fd_query": "TaskFdQueryAttr", "link_create": "LinkCreateAttr",
    "link_update": "LinkUpdateAttr", "link_detach": "LinkDetachAttr",
    "enable_stats": "EnableStatsAttr", "iter_create": "IterCreateAttr",
    "prog_bind_map": "ProgBindMapAttr", "token_create": "TokenCreateAttr",
}  # fmt: skip
INFOS = {"bpf_prog_info": "BPFProgInfo", "bpf_map_info": "BPFMapInfo",
         "bpf_link_info": "BPFLinkInfo", "bpf_btf_info": "BPFBTFInfo"}  # fmt: skip
INTS = {(1, False): "c_uint8", (2, False): "c_uint16", (4, False): "c_uint32",
        (8, False): "c_uint64", (1, True): "c_int8", (2, True): "c_int16",
        (4, True): "c_int32", (8, True): "c_int64"}  # fmt: skip


def version(path: Path) -> tuple[int, int]:
    m = re.search(r"-(\d+)\.(\d+)", path.name)
    assert m, path
    return int(m[1]), int(m[2])


def blobs() -> list[tuple[str, BTF]]:
    """(version text, BTF) of each reference kernel, oldest first; one per version."""
    seen: dict[tuple[int, int], Path] = {}
    for p in sorted((REPO / "btf").glob("*.btf.xz"), key=lambda p: ("-rt-" in p.name, p.name)):
        seen.setdefault(version(p), p)
    return [(f"{v[0]}.{v[1]}", BTF.from_file(p)) for v, p in sorted(seen.items())]


def strip(btf: BTF, tid: int) -> int:
    while btf.kind_of(tid) in (BTF_KIND_TYPEDEF, BTF_KIND_CONST, BTF_KIND_VOLATILE):
        tid = btf.type(tid).type
    return tid


def attr_members(btf: BTF) -> dict[str, int]:
    """Class name -> type id of each known member of ``union bpf_attr``."""
    union = btf.type(btf.find_one("bpf_attr", BTF_KIND_UNION))
    out = {}
    for m in union.members:
        key = m.name or next(f for f in _flat_names(btf, m.type))
        if key in ATTRS:
            out[ATTRS[key]] = strip(btf, m.type)
    return out


def _flat_names(btf: BTF, tid: int) -> list[str]:
    """Field names of a struct/union with anonymous members flattened, in order."""
    names = []
    for m in btf.type(strip(btf, tid)).members:
        if m.name:
            names.append(m.name)
        elif btf.kind_of(strip(btf, m.type)) in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            names.extend(_flat_names(btf, m.type))
    return names


def field_paths(btf: BTF, tid: int, prefix: str = "") -> set[str]:
    """Every field as a dotted path (anonymous members flattened), for "since" notes."""
    out = set()
    for m in btf.type(strip(btf, tid)).members:
        sub = strip(btf, m.type)
        path = prefix + m.name if m.name else prefix.rstrip(".")
        if m.name:
            out.add(path)
        if btf.kind_of(sub) in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            out |= field_paths(btf, sub, f"{path}." if path else "")
    return out


class Since:
    """The oldest reference kernel that has an enum value or a field."""

    def __init__(self, refs: list[tuple[str, BTF]]) -> None:
        self.refs = refs
        self.values: dict[str, str] = {}
        self.fields: dict[tuple[str, str], str] = {}
        for ver, btf in reversed(refs):  # newest first: older ones overwrite
            for name in ENUMS:
                for tid in btf.find(name, BTF_KIND_ENUM) + btf.find(name, BTF_KIND_ENUM64):
                    for v in btf.type(tid).values:
                        self.values[v.name] = ver
            for cls, tid in attr_members(btf).items():
                for path in field_paths(btf, tid):
                    self.fields[(cls, path)] = ver
            for struct, cls in INFOS.items():
                for tid in btf.find(struct, BTF_KIND_STRUCT):
                    for path in field_paths(btf, tid):
                        self.fields[(cls, path)] = ver

    def note(self, ver: str) -> str:
        return f"<={ver}" if ver == self.refs[0][0] else ver


class Writer:
    def __init__(self, btf: BTF, since: Since) -> None:
        self.btf = btf
        self.since = since
        self.classes: list[str] = []  # source of each class, dependencies first
        self.checks: list[tuple[str, int]] = []  # (class name, type id) to verify

    def ctype(self, tid: int, owner: str, field: str, since_of: str = "", path: str = "") -> str:
        btf = self.btf
        tid = strip(btf, tid)
        t = btf.type(tid)
        if t.kind == BTF_KIND_INT:
            return "ctypes." + INTS[(t.size, bool(t.int_encoding & 1))]
        if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return "ctypes." + INTS[(t.size, False)]
        if t.kind == BTF_KIND_ARRAY:
            elem = self.ctype(t.elem_type, owner, field)
            if elem == "ctypes.c_int8" or btf.name_of(strip(btf, t.elem_type)) == "char":
                elem = "ctypes.c_char"
            return f"({elem} * {t.nelems})"
        if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            return self.record(tid, f"_{owner.lstrip('_')}_{field}", since_of=since_of, path=path)
        raise SystemExit(f"{owner}.{field}: unsupported kind {t.kind_name}")

    def record(self, tid: int, name: str, doc: str = "", since_of: str = "", path: str = "") -> str:
        """Emit a ctypes Structure/Union for ``tid``; anonymous members via ``_anonymous_``."""
        btf = self.btf
        t = btf.type(tid)
        base = "ctypes.Union" if t.kind == BTF_KIND_UNION else "ctypes.Structure"
        fields, anonymous = [], []
        for i, m in enumerate(t.members):
            fname = m.name or f"_{i}"
            sub_path = f"{path}{m.name}" if m.name else path.rstrip(".")
            ctype = self.ctype(m.type, name, fname, since_of, f"{sub_path}." if sub_path else "")
            note = ""
            if m.name and since_of:
                note = f"  # {self.since.note(self.since.fields[(since_of, sub_path)])}"
            if m.bitfield_size:
                fields.append(f'("{fname}", {ctype}, {m.bitfield_size}),{note}')
            else:
                fields.append(f'("{fname}", {ctype}),{note}')
            if not m.name:
                anonymous.append(fname)
        lines = [f"class {name}({base}):"]
        if doc:
            lines.append(f'    """{doc}"""\n')
        if name.startswith("Test"):
            lines.append("    __test__ = False  # not a pytest class")
        if anonymous:
            lines.append(f"    _anonymous_ = ({', '.join(repr(a) for a in anonymous)},)")
        lines.append("    _fields_ = [")
        lines += [f"        {f}" for f in fields]
        lines.append("    ]")
        self.classes.append("\n".join(lines))
        self.checks.append((name, tid))
        return name


def verify(source: str, btf: BTF, checks: list[tuple[str, int]]) -> None:
    """Every generated class has BTF's size and every named field BTF's offset."""
    ns: dict[str, object] = {}
    exec(compile(source, str(OUT), "exec"), ns)
    for name, tid in checks:
        cls = ns[name]
        t = btf.type(tid)
        assert ctypes.sizeof(cls) == t.size, (name, ctypes.sizeof(cls), t.size)
        for m in t.members:
            if m.name and not m.bitfield_size:
                assert getattr(cls, m.name).offset * 8 == m.bit_offset, (name, m.name)


def generate() -> str:
    refs = blobs()
    newest_ver, btf = refs[-1]
    since = Since(refs)
    out = [
        '"""The kernel\'s BPF enums, by their kernel names (pure: no ctypes, no syscalls).',
        "",
        "Generated by ``python dev/gen_abi.py`` from the BTF of Linux "
        f"{newest_ver} (the newest kernel in btf/);",
        "do not edit.  A note beside each value names the oldest reference kernel that has",
        'it ("<=5.10": even the oldest does).  The enums are :class:`KernelEnum`: ints whose',
        "repr is the kernel's name (``BPF_MAP_TYPE_RINGBUF``, not ``27``), at a fraction of",
        "enum.IntEnum's import cost (about 12 ms for these 250 values), which every start-up",
        "would pay.  ABI values are the same on every kernel that has them, so using them is not",
        "hard-coding one kernel's layout.  The attr layouts are in :mod:`pybpf.abi_attrs`.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "",
        "class KernelEnum(int):",
        '    """An int named as in the kernel; ``cls(value)`` finds the named constant."""',
        "",
        "    __slots__ = ()",
        "    _by_value: dict[int, KernelEnum]",
        "    _names: dict[int, str]",
        "",
        "    def __init_subclass__(cls) -> None:",
        "        cls._by_value = {}",
        "        cls._names = {}",
        "",
        "    def __new__(cls, value: int, name: str = \"\") -> KernelEnum:",
        "        if not name:",
        "            try:",
        "                return cls._by_value[value]",
        "            except KeyError:",
        "                raise ValueError(f\"{value} is not a known {cls.__name__}\") from None",
        "        member = super().__new__(cls, value)",
        "        cls._by_value.setdefault(value, member)",
        "        cls._names.setdefault(value, name)",
        "        return member",
        "",
        "    @property",
        "    def name(self) -> str:",
        "        return self._names[int(self)]",
        "",
        "    def __repr__(self) -> str:",
        "        return self._names.get(int(self), int.__repr__(self))",
        "",
        "    __str__ = __repr__",
        "",
        "    @classmethod",
        "    def members(cls) -> dict[str, KernelEnum]:",
        "        return {m.name: m for m in cls._by_value.values()}",
        "",
    ]
    for name in ENUMS:
        ids = btf.find(name, BTF_KIND_ENUM) + btf.find(name, BTF_KIND_ENUM64)
        if not ids:
            raise SystemExit(f"enum {name} not in the newest BTF")
        out += ["", f"class {name}(KernelEnum):", f'    """enum {name}"""', "", ""]
        for v in btf.type(ids[0]).values:
            if v.name.startswith("__") or v.name.startswith("MAX_"):
                continue  # __MAX_BPF_ATTACH_TYPE and friends change with every release
            out.append(f'{v.name} = {name}({v.value}, "{v.name}")'
                       f"  # {since.note(since.values[v.name])}")
    attrs = [
        '"""``union bpf_attr`` (one structure per command) and the info structs, as ctypes.',
        "",
        "Generated by ``python dev/gen_abi.py`` from the BTF of Linux "
        f"{newest_ver} (the newest kernel in btf/);",
        "do not edit.  A note beside each field names the oldest reference kernel that has it",
        '("<=5.10": even the oldest does).  A kernel too old for a field rejects a non-zero',
        "value there (E2BIG); pybpf.syscall passes only the bytes up to the last non-zero field.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import ctypes",
        "",
        "",
        "",
    ]
    w = Writer(btf, since)
    for cls, tid in attr_members(btf).items():
        w.record(tid, cls, doc=f"``union bpf_attr`` for {cls[:-4]}", since_of=cls)
    for struct, cls in INFOS.items():
        w.record(btf.find_one(struct, BTF_KIND_STRUCT), cls, doc=f"``struct {struct}``",
                 since_of=cls)  # fmt: skip
    enums = "\n".join(out) + "\n"
    layouts = "\n".join(attrs) + "\n\n\n".join(w.classes) + "\n"
    verify(layouts, btf, w.checks)
    return {OUT: enums, OUT_ATTRS: layouts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file would change")
    args = ap.parse_args()
    files = generate()
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(REPO)} is stale: run python dev/gen_abi.py", file=sys.stderr)
        return 1 if stale else 0
    for p, text in files.items():
        p.write_text(text)
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
