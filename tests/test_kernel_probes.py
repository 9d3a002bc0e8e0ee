"""Feature probes against bpftool's own (``bpftool feature probe kernel``, libbpf's probes) and
against what loading the real thing does."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from pybpf import probes
from pybpf.btf import BTF
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.uapi import BPF_MAP_TYPE_ARRAY

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]



@pytest.fixture(scope="module")
def bpftool_features() -> dict:
    path = shutil.which("bpftool")
    assert path, "bpftool is the oracle for feature probes"
    out = subprocess.run([path, "feature", "probe", "kernel", "-j"], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "ours, section, key",
    [
        ("ringbuf", "map_types", "have_ringbuf_map_type"),
        ("raw_tp", "program_types", "have_raw_tracepoint_prog_type"),
        ("tracepoint", "program_types", "have_tracepoint_prog_type"),
        ("kprobe", "program_types", "have_kprobe_prog_type"),
    ],
)
def test_probes_agree_with_bpftool(bpftool_features: dict, ours: str, section: str,
                                   key: str) -> None:  # fmt: skip
    probes.reset_cache()
    assert probes.probe_all()[ours] == bpftool_features[section][key]


# probe -> the enumerator (or union bpf_attr member) its kernel version added
DECLARED_BY = {
    "ringbuf": "BPF_MAP_TYPE_RINGBUF", "batch_ops": "BPF_MAP_LOOKUP_BATCH",
    "raw_tp": "BPF_PROG_TYPE_RAW_TRACEPOINT", "tracepoint": "BPF_PROG_TYPE_TRACEPOINT",
    "tp_btf": "BPF_TRACE_RAW_TP", "link_create": "BPF_LINK_CREATE",
    "log_true_size": "log_true_size", "map_name": "map_name",
    "btf_float": "BTF_KIND_FLOAT", "btf_decl_tag": "BTF_KIND_DECL_TAG",
    "btf_type_tag": "BTF_KIND_TYPE_TAG", "btf_enum64": "BTF_KIND_ENUM64",
}  # fmt: skip


def kernel_declarations() -> set[str]:
    """The names of DECLARED_BY in the running kernel's BTF string table, which holds the
    names of its types, members and enumerators (and nothing else)."""
    raw = BTF.kernel().raw_bytes()
    hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from("<IIIII", raw, 4)
    strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
    return {n for n in DECLARED_BY.values() if b"\0" + n.encode() + b"\0" in strings}


def test_every_probe_names_its_kernel_version_and_is_cached() -> None:
    probes.reset_cache()
    results = probes.probe_all()
    versions = probes.probe_versions()
    assert set(results) == set(versions) and all(isinstance(v, bool) for v in results.values())
    assert all(v.count(".") == 1 and v.replace(".", "").isdigit() for v in versions.values())
    # What the kernel declares in its own BTF is what it supports: each probe agrees with the
    # enumerator or bpf_attr member that introduced its feature.
    declared = kernel_declarations()
    for name, decl in DECLARED_BY.items():
        assert results[name] == (decl in declared), (name, decl)
    for name in ("btf", "btf_func", "kernel_btf"):  # older than any kernel with BTF (5.4)
        assert results[name], name
    calls = []
    real = probes._sys.map_create
    probes._sys.map_create = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        assert probes.have_ringbuf() and probes.probe_all() == results
    finally:
        probes._sys.map_create = real
    assert calls == []  # answered from the cache


def test_tp_btf_probe_matches_loading_a_tp_btf_program() -> None:
    """The probe says tp_btf works; a real tp_btf program loads and attaches."""
    from pybpf.asm import R0, Asm
    from pybpf.loader import LoadedObject

    a = Asm()
    a.mov(R0, 0)
    a.exit()
    spec = ObjectSpec("p", [ProgramSpec("p", "tp_btf/sched_switch", a.assemble())],
                      maps=[MapSpec("unused", BPF_MAP_TYPE_ARRAY, 4, 4, 1)])  # fmt: skip
    with LoadedObject(prepare(spec, BTF.kernel())) as obj:
        obj.load()
        obj.attach()
        assert len(obj.links) == 1
    assert probes.have_tp_btf()
