"""``Asm.read_bitfield`` (BPF_CORE_READ_BITFIELD) runs on the kernel and reads the right bits.

Kernel structs with bitfields (u64, u32 and u8 units, fields that cross byte
boundaries, a 20-bit field) are declared locally with only some of their
bitfields, at local offsets that differ from the kernel's.  Random bytes laid
out as the kernel's struct go into an array map; a raw_tp program, relocated
by pybpf against the live vmlinux BTF, reads each bitfield from the map value
with ``read_bitfield`` and stores it after the struct; ``BPF_PROG_TEST_RUN``
runs it.  The expected values come from bpftool's bit offsets and sizes.
"""

from __future__ import annotations

import random
import re
import struct

import pytest
from policy import require_root
from test_runqslower_relocation import bpftool_raw

from pybpf.asm import R0, R6, R7, R8, Asm
from pybpf.btf import BTF
from pybpf.cdecl import Struct, u8, u16, u32, u64
from pybpf.loader import LoadedObject
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.syscall import prog_test_run
from pybpf.uapi import BPF_MAP_TYPE_ARRAY

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]

# Local declarations: some bitfields of each struct, in another order, other units.
CASES = {
    "perf_branch_entry": [("new_type", u8, 4), ("cycles", u64, 16), ("type", u32, 4),
                          ("mispred", u64, 1)],
    "pcie_link_state": [("aspm_enabled", u32, 7), ("aspm_disable", u32, 7),
                        ("clkpm_enabled", u8, 1), ("aspm_capable", u32, 7)],
    "flow_dissector_mpls_lse": [("mpls_label", u32, 20), ("mpls_tc", u16, 3),
                                ("mpls_bos", u8, 1)],
}  # fmt: skip
MEMBER = re.compile(r"^\t'([^']*)' type_id=\d+ bits_offset=(\d+)(?: bitfield_size=(\d+))?")


@pytest.fixture(scope="module")
def layout() -> dict[str, tuple[int, dict[str, tuple[int, int]]]]:
    """bpftool's view: struct size and (bit offset, bit size) of each member."""
    require_root()
    out: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
    current = None
    for line in bpftool_raw("/sys/kernel/btf/vmlinux"):
        m = re.match(r"^\[\d+\] STRUCT '([^']*)' size=(\d+)", line)
        if m:
            current = m.group(1) if m.group(1) in CASES else None
            if current:
                out[current] = (int(m.group(2)), {})
            continue
        mm = MEMBER.match(line)
        if mm and current:
            out[current][1][mm.group(1)] = (int(mm.group(2)), int(mm.group(3) or 0))
        elif not line.startswith("\t"):
            current = None
    assert set(out) == set(CASES)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_bitfield_on_the_kernel(layout, name):
    size, members = layout[name]
    # Only the members this kernel has (bpftool says which): e.g. 5.10's perf_branch_entry
    # has no new_type yet.
    cases = [f for f in CASES[name] if f[0] in members]
    assert cases, (name, members)
    local = Struct(name + "___local", cases)
    fields = [getattr(local, f[0]) for f in cases]
    value_size = size + 8 * len(fields)
    a = Asm()
    a.ld_map_value(R6, "vals")
    for i, ref in enumerate(fields):
        a.read_bitfield(R7, R6, ref, tmp=R8)
        a.stx(R6, size + 8 * i, R7, size=8)
    a.mov(R0, 0).exit()
    spec = ObjectSpec(
        "bf", [ProgramSpec("bf", "raw_tp/sys_enter", a.assemble())],
        maps=[MapSpec("vals", BPF_MAP_TYPE_ARRAY, 4, value_size, 1)],
    )  # fmt: skip
    prepared = prepare(spec, BTF.kernel())
    rng = random.Random(name)
    with LoadedObject(prepared) as obj:
        obj.load()
        for _ in range(5):
            raw = bytes(rng.randrange(256) for _ in range(size))
            obj.maps["vals"].update(b"\0\0\0\0", raw + bytes(8 * len(fields)))
            prog_test_run(obj.programs["bf"].fileno(), ctx_in=bytes(8))
            got = obj.maps["vals"].lookup(b"\0\0\0\0")
            assert got is not None
            whole = int.from_bytes(raw, "little")
            for i, (field_name, _, _) in enumerate(cases):
                bit_off, bits = members[field_name]
                want = (whole >> bit_off) & ((1 << bits) - 1)
                (value,) = struct.unpack_from("<Q", got, size + 8 * i)
                assert value == want, (name, field_name, bit_off, bits)
