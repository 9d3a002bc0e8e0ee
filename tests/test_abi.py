"""pybpf/abi.py: generated from BTF, current, and laid out as the kernel says.

The regeneration check runs the generator against the newest BTF in btf/; the layout check
compares every generated ``bpf_attr`` part and info struct with bpftool's reading of the
same BTF (bit offsets of each named member, sizes), an oracle that shares no code with us.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pybpf import abi, abi_attrs

REPO = Path(__file__).resolve().parent.parent
NEWEST = max((REPO / "btf").glob("firecracker-*.btf.xz"))


def test_regenerating_changes_nothing() -> None:
    p = subprocess.run([sys.executable, str(REPO / "dev" / "gen_abi.py"), "--check"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_enums_read_as_the_kernel_names_them() -> None:
    assert repr(abi.BPF_MAP_TYPE_RINGBUF) == "BPF_MAP_TYPE_RINGBUF"
    assert abi.BPF_MAP_TYPE_RINGBUF == 27 and isinstance(abi.BPF_MAP_TYPE_RINGBUF, int)
    assert abi.bpf_map_type(27) is abi.BPF_MAP_TYPE_RINGBUF
    assert abi.bpf_prog_type.members()["BPF_PROG_TYPE_TRACING"] == 26
    with pytest.raises(ValueError, match="not a known bpf_cmd"):
        abi.bpf_cmd(100_000)


@pytest.fixture(scope="module")
def bpftool_types(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    import lzma

    from policy import require_tools

    require_tools("bpftool")
    raw = tmp_path_factory.mktemp("abi") / "vmlinux.btf"
    raw.write_bytes(lzma.decompress(NEWEST.read_bytes()))
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(raw)], check=True,
                         capture_output=True, text=True, timeout=300).stdout  # fmt: skip
    return {str(t["id"]): t for t in json.loads(out)["types"]}


def flat_members(types: dict[str, dict], tid: int, base: int = 0) -> dict[str, tuple[int, int]]:
    """name -> (bit offset, bitfield size) of every member, anonymous ones flattened."""
    out: dict[str, tuple[int, int]] = {}
    for m in types[str(tid)].get("members", []):
        off = base + m["bits_offset"]
        if m["name"] == "(anon)":
            t = types[str(m["type_id"])]
            while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE"):
                t = types[str(t["type_id"])]
            out.update(flat_members(types, t["id"], off))
        else:
            out[m["name"]] = (off, m.get("bitfield_size", 0))
    return out


def ctypes_members(cls: type, base: int = 0) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    anonymous = getattr(cls, "_anonymous_", ())
    for f in cls._fields_:
        desc = getattr(cls, f[0])
        if f[0] in anonymous:
            out.update(ctypes_members(f[1], base + desc.offset * 8))
            continue
        bits = f[2] if len(f) == 3 else 0
        bit_off = desc.offset * 8 + ((desc.size & 0xFFFF) if bits else 0)
        out[f[0]] = (base + bit_off, bits)
    return out


@pytest.mark.oracle("bpftool")
@pytest.mark.parametrize("cls", ["BPFProgInfo", "BPFMapInfo", "BPFLinkInfo", "BPFBTFInfo"])
def test_info_structs_match_bpftool(bpftool_types: dict[str, dict], cls: str) -> None:
    struct = {"BPFProgInfo": "bpf_prog_info", "BPFMapInfo": "bpf_map_info",
              "BPFLinkInfo": "bpf_link_info", "BPFBTFInfo": "bpf_btf_info"}[cls]  # fmt: skip
    (t,) = [t for t in bpftool_types.values() if t["kind"] == "STRUCT" and t["name"] == struct]
    assert ctypes.sizeof(getattr(abi_attrs, cls)) == t["size"]
    assert ctypes_members(getattr(abi_attrs, cls)) == flat_members(bpftool_types, t["id"])


@pytest.mark.oracle("bpftool")
def test_every_bpf_attr_part_matches_bpftool(bpftool_types: dict[str, dict]) -> None:
    (union,) = [t for t in bpftool_types.values()
                if t["kind"] == "UNION" and t["name"] == "bpf_attr"]  # fmt: skip
    by_first: dict[str, dict[str, tuple[int, int]]] = {}
    for m in union["members"]:
        members = flat_members(bpftool_types, m["type_id"])
        by_first[m["name"] if m["name"] != "(anon)" else next(iter(members))] = members
    checked = 0
    for key, cls_name in {"map_type": "MapCreateAttr", "prog_type": "ProgLoadAttr",
                          "btf": "BTFLoadAttr", "link_create": "LinkCreateAttr",
                          "test": "TestRunAttr", "start_id": "GetIdAttr",
                          "raw_tracepoint": "RawTracepointAttr", "batch": "MapBatchAttr",
                          "map_fd": "MapElemAttr", "info": "InfoAttr"}.items():  # fmt: skip
        assert ctypes_members(getattr(abi_attrs, cls_name)) == by_first[key], cls_name
        checked += 1
    assert checked == 10
