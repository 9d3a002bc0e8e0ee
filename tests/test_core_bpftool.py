"""Generated CO-RE cases relocated against every kernel BTF in ``btf/``, checked with bpftool.

For each blob, cases from ``test_core_gen.generate`` (structs with bitfields,
anonymous members, flavors, missing members) are relocated offline by pybpf;
every direct member's byte offset, size and bitfield shift must be what
``bpftool btf dump file F format raw`` says for the struct pybpf chose — an
oracle that shares no code with pybpf.  Local offsets differ from the
kernels', so skipping relocation fails here.
"""

from __future__ import annotations

import lzma
import re

import pytest
from test_core_gen import generate
from test_runqslower_relocation import BLOBS, RawDump, bpftool_raw

from pybpf.btf import BTF
from pybpf.cdecl import FieldRef, encode_local_btf, strip_mods
from pybpf.core import CoreEngine, CoreRelo

pytestmark = pytest.mark.oracle("bpftool")

BITS = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?")


@pytest.fixture(scope="module", params=BLOBS, ids=[b.name.split(".btf")[0] for b in BLOBS])
def kernel(request, tmp_path_factory):
    raw = tmp_path_factory.mktemp("btf") / "vmlinux.btf"
    raw.write_bytes(lzma.decompress(request.param.read_bytes()))
    lines = bpftool_raw(raw)
    bits: dict[int, dict[str, tuple[int, int]]] = {}
    current = 0
    for line in lines:
        if line.startswith("["):
            current = int(line[1 : line.index("]")])
            continue
        m = BITS.match(line)
        if m:
            bits.setdefault(current, {})[m.group(1)] = (int(m.group(3)), int(m.group(4) or 0))
    return BTF.from_file(request.param), RawDump(lines), bits


def test_generated_cases_match_bpftool(kernel):
    btf, dump, bits = kernel
    cases = [c for c in generate(btf, structs=30, enums=5) if isinstance(c.target, FieldRef)
             and len(c.target.path) == 1 and c.kind in ("byte_off", "byte_sz", "rshift_u64",
                                                        "field_exists")]  # fmt: skip
    roots = []
    for c in cases:
        if c.target.root not in roots:
            roots.append(c.target.root)
    data, ids = encode_local_btf(roots)
    engine = CoreEngine(BTF.from_bytes(data), btf)
    checked = moved = 0
    for c in cases:
        ref = c.target
        r = engine.relocate(CoreRelo(0, ids[id(ref.root)], ref.access, c.kind_number))
        if r.poison or r.new_val == 0 and c.kind == "field_exists":
            continue
        member = bits.get(r.target_type_id, {}).get(ref.path[0])
        if member is None:
            continue  # reached through an anonymous member: its offset is relative
        bit_off, bit_sz = member
        if c.kind == "field_exists":
            assert r.new_val == 1
        elif bit_sz:
            size = strip_mods(ref.ctype).size
            if c.kind == "rshift_u64":
                assert r.new_val == 64 - bit_sz, c.label
            elif c.kind == "byte_off":
                assert r.new_val * 8 <= bit_off and bit_off + bit_sz <= (r.new_val + 8) * 8
            else:
                assert r.new_val >= size or r.new_val in (1, 2, 4, 8)
        elif c.kind == "byte_off":
            assert r.new_val == bit_off // 8, c.label
            moved += r.new_val != r.orig_val
        elif c.kind == "byte_sz":
            (tid,) = [m[1] for m in dump.members[r.target_type_id] if m[0] == ref.path[0]]
            assert r.new_val == dump.size_of(tid), c.label
        checked += 1
    assert checked >= 100 and moved >= 20
