"""The encoder against the kernel's BTF verifier, and program BTF checked with bpftool.

* generated C-like BTF of every kind is accepted by BPF_BTF_LOAD, and the kernel's copy
  (``bpftool btf dump id N``) equals pybpf's dump of the bytes sent;
* runqslower loads with program BTF: ``bpftool prog show`` lists full names (not the
  15-character ``prog_name``) and a btf_id, ``bpftool map dump`` prints typed keys/values.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
from pathlib import Path

import pytest
from btf_strategies import kernel_types
from hypothesis import HealthCheck, given, settings

from pybpf.btf import BTF, KIND_NAMES
from pybpf.btf_dump import dump_raw
from pybpf.btf_encoder import (
    BTF_FUNC_GLOBAL,
    BTF_FUNC_STATIC,
    BTF_VAR_STATIC,
    BTFBuilder,
)
from pybpf.loader import LoadedObject
from pybpf.object import prepare, program_btf
from pybpf.programs import runqslower
from pybpf.syscall import btf_load, obj_get_info_by_fd

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]


def _need() -> None:
    """(Checked for every test by the kernel and oracle markers.)"""


def bpftool_json(*args: str) -> object:
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True,
                                     capture_output=True, text=True).stdout)


def fdinfo(fd: int, key: str) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in fdinfo of fd {fd}")


class BTFInfo(ctypes.Structure):
    """struct bpf_btf_info (UAPI, 4.18; name fields 5.11)."""

    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32),
                ("id", ctypes.c_uint32), ("name", ctypes.c_uint64),
                ("name_len", ctypes.c_uint32), ("kernel_btf", ctypes.c_uint32)]


def kernel_copy(fd: int) -> list[str]:
    """bpftool's raw dump of the BTF object behind ``fd`` (the kernel's copy)."""
    info = BTFInfo()
    obj_get_info_by_fd(fd, info)
    assert info.id > 0
    return subprocess.run(["bpftool", "btf", "dump", "id", str(info.id), "format", "raw"],
                          check=True, capture_output=True, text=True).stdout.splitlines()


def valid_all_kinds() -> bytes:
    """One type of every kind, each as the kernel's BTF verifier accepts it."""
    b = BTFBuilder()
    i = b.add_int("int", 4, signed=True)
    c = b.add_int("char", 1, char=True)
    u64 = b.add_int("unsigned long", 8)
    b.add_int("_Bool", 1, bool_=True)
    p = b.add_ptr(i)
    b.add_restrict(p)
    cv = b.add_const(b.add_volatile(i))
    b.add_ptr(b.add_type_tag("user", i))
    td = b.add_typedef("pid_t", i)
    arr = b.add_array(c, i, 16)
    s = b.add_struct("task", 32, [("pid", td, 0), ("comm", arr, 32), ("flags", i, 160, 3),
                                  ("more", i, 163, 5)])
    b.add_union("u", 8, [("a", i, 0), ("b", u64, 0)])
    b.add_enum("color", 4, [("RED", 0), ("BIG", 0xFFFFFFFF)])
    b.add_enum("sign", 4, [("NEG", -5), ("POS", 7)])
    b.add_enum("e64", 8, [("HUGE", 1 << 63), ("ONE", 1)])
    b.add_enum("s64", 8, [("MIN", -(1 << 63))], signed=True)
    b.add_fwd("later")
    b.add_fwd("ulater", union=True)
    proto = b.add_func_proto(i, [("ctx", b.add_ptr(s)), ("n", u64)])
    f = b.add_func("handler", proto, BTF_FUNC_GLOBAL)
    b.add_func("helper", proto, BTF_FUNC_STATIC)
    b.add_func_proto(0, [("fmt", p), ("", 0)])  # varargs
    v1 = b.add_var("min_us", cv)
    v2 = b.add_var("counter", u64, BTF_VAR_STATIC)
    b.add_datasec(".data", 16, [(v1, 0, 4), (v2, 8, 8)])
    b.add_float("double", 8)
    b.add_decl_tag("kfunc", f)
    b.add_decl_tag("arg", f, 1)
    b.add_decl_tag("field", s, 0)
    return b.encode()


def test_all_kinds_accepted_by_kernel() -> None:
    _need()
    data = valid_all_kinds()
    ours = list(dump_raw(BTF.from_bytes(data)))
    assert {line.split()[1] for line in ours if line.startswith("[")} == \
        set(KIND_NAMES.values()) - {"UNKNOWN"}
    with btf_load(data) as fd:
        assert kernel_copy(fd.fileno()) == ours


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_types())
def test_generated_btf_accepted_and_kept(types: list) -> None:
    _need()
    b = BTFBuilder()
    for t in types:
        b.add_type(t)
    data = b.encode()
    with btf_load(data) as fd:
        assert kernel_copy(fd.fileno()) == list(dump_raw(BTF.from_bytes(data)))


@pytest.fixture
def loaded():
    _need()
    btf = BTF.kernel()
    prepared = prepare(runqslower.build_object(), btf)
    args = argparse.Namespace(min_us=4321, tid=None, pid=None, comm="pybpf")
    with LoadedObject(prepared, runqslower.TOOL.rodata(args)) as obj:
        obj.load()
        yield obj


def test_prog_show_full_names(loaded: LoadedObject) -> None:
    btf_ids = set()
    for name, fd in loaded.programs.items():
        info = bpftool_json("prog", "show", "id", str(fdinfo(fd.fileno(), "prog_id")))
        assert info["name"] == name  # full name: sched_wakeup_new has 16 characters
        assert info["btf_id"] > 0
        btf_ids.add(info["btf_id"])
    assert "sched_wakeup_new" in loaded.programs
    assert len(btf_ids) == 1  # one program BTF for the whole object
    assert loaded.warnings == [] or all("BTF" not in w for w in loaded.warnings)
    # the kernel's copy of the program BTF is what pybpf encoded
    (btf_id,) = btf_ids
    kernel = subprocess.run(["bpftool", "btf", "dump", "id", str(btf_id), "format", "raw"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    assert kernel == list(dump_raw(BTF.from_bytes(program_btf(loaded.prepared).btf)))
    funcs = [line.split("'")[1] for line in kernel if " FUNC '" in line]
    assert sorted(funcs) == sorted(loaded.programs)


def test_map_dump_typed(loaded: LoadedObject) -> None:
    start = loaded.maps["start"]
    start.update((1234).to_bytes(4, "little"), (987654321).to_bytes(8, "little"))
    map_id = fdinfo(start.fileno(), "map_id")
    assert bpftool_json("map", "show", "id", str(map_id))["btf_id"] > 0
    entries = bpftool_json("map", "dump", "id", str(map_id))
    # typed: bpftool adds the BTF-formatted entry next to the raw bytes
    assert {"key": 1234, "value": 987654321} in [e["formatted"] for e in entries]
    rodata = loaded.maps[".rodata"]
    dump = bpftool_json("map", "dump", "id", str(fdinfo(rodata.fileno(), "map_id")))
    sec = {k: v for d in dump[0]["formatted"]["value"][".rodata"] for k, v in d.items()}
    assert sec == {"min_us": 4321, "targ_pid": 0, "targ_tgid": 0, "targ_comm": "pybpf"}
    events = loaded.maps["events"]
    info = bpftool_json("map", "show", "id", str(fdinfo(events.fileno(), "map_id")))
    assert info["type"] == "perf_event_array"  # created without BTF: the kernel refuses it
    assert info.get("btf_id", 0) == 0


def test_declared_map_types() -> None:
    """MapSpec.key_type/value_type: a struct value is dumped by bpftool field by field."""
    _need()
    from pybpf.cdecl import Array, Struct, char, u32, u64
    from pybpf.object import MapSpec, ObjectSpec
    from pybpf.uapi import BPF_MAP_TYPE_HASH

    value = Struct("stats", [("count", u64), ("comm", Array(char, 8)), ("cpu", u32)])
    spec = ObjectSpec("typed", [], [MapSpec("typed_map", BPF_MAP_TYPE_HASH, 8, value.size, 4,
                                            key_type=u64, value_type=value)])
    with LoadedObject(prepare(spec, BTF.kernel())) as obj:
        obj.load()
        m = obj.maps["typed_map"]
        m.update((7).to_bytes(8, "little"),
                 (42).to_bytes(8, "little") + b"pybpf\0\0\0" + (1).to_bytes(4, "little")
                 + bytes(value.size - 20))
        entries = bpftool_json("map", "dump", "id", str(fdinfo(m.fileno(), "map_id")))
    assert [e["formatted"] for e in entries] == [
        {"key": 7, "value": {"count": 42, "comm": "pybpf", "cpu": 1}}]
