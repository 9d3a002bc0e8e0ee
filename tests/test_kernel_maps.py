"""pybpf.maps' mapping API on the real kernel, bpftool as the oracle for what the kernel holds.

Every map type user space reads (hash, array, per-CPU hash/array, LRU hash, LRU per-CPU hash),
typed keys and values, batch operations (5.6) and pinning to a bpffs (4.4).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess

import pytest

from pybpf import syscall as S
from pybpf import uapi as U
from pybpf.errors import BPFSyscallError, PyBPFError
from pybpf.maps import Map, MapSpec, mount_bpffs

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("bpftool")]



def bpftool(*args: str) -> object:
    path = shutil.which("bpftool")
    assert path, "bpftool is the oracle for map contents"
    out = subprocess.run([path, *args, "-j"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def hexbytes(values: list) -> bytes:
    return bytes(int(v, 16) for v in values)


def dump(m: Map) -> dict[bytes, object]:
    """The map's contents as bpftool reads them: key bytes -> value bytes (or, per-CPU,
    a list of value bytes by CPU)."""
    out = {}
    for e in bpftool("map", "dump", "id", str(m.info().id)):
        key = hexbytes(e["key"])
        if "values" in e:
            out[key] = [hexbytes(v["value"]) for v in sorted(e["values"], key=lambda v: v["cpu"])]
        else:
            out[key] = hexbytes(e["value"])
    return out


def ncpus() -> int:
    return len(S.possible_cpus())


def test_hash_mapping_api_typed() -> None:
    with Map.create(MapSpec("py_hash", U.BPF_MAP_TYPE_HASH, 4, 8, 128), "I", "Q") as m:
        for k in range(50):
            m[k] = k * 1000 + 7
        assert m[3] == 3007 and m.get(99) is None and m.get(99, -1) == -1
        assert 3 in m and 99 not in m and len(m) == 50
        del m[3]
        with pytest.raises(KeyError):
            m[3]
        with pytest.raises(KeyError):
            del m[3]
        want = {k: k * 1000 + 7 for k in range(50) if k != 3}
        assert dict(m.typed_items()) == want and sorted(m) == sorted(want)
        assert sorted(m.values()) == sorted(want.values())
        assert dump(m) == {struct.pack("=I", k): struct.pack("=Q", v) for k, v in want.items()}


def test_struct_keys_are_tuples() -> None:
    spec = MapSpec("py_tuple", U.BPF_MAP_TYPE_HASH, 8, 16, 8)
    with Map.create(spec, "<IHH", "<QQ") as m:
        m[(1, 2, 3)] = (10, 20)
        assert m[(1, 2, 3)] == (10, 20)
        assert dump(m) == {struct.pack("<IHH", 1, 2, 3): struct.pack("<QQ", 10, 20)}
    with pytest.raises(PyBPFError, match="value type is 8 bytes"):
        Map.create(MapSpec("py_bad", U.BPF_MAP_TYPE_HASH, 4, 4, 1), "I", "Q")


def test_array_has_every_index_and_refuses_delete() -> None:
    with Map.create(MapSpec("py_array", U.BPF_MAP_TYPE_ARRAY, 4, 4, 6), "I", "i") as m:
        assert len(m) == 6 and dict(m.typed_items()) == {i: 0 for i in range(6)}
        m[5] = -3
        assert m[5] == -3
        with pytest.raises(BPFSyscallError, match="EINVAL"):
            del m[5]
        with pytest.raises(BPFSyscallError, match="E2BIG"):
            m[6] = 1  # past max_entries
        assert dump(m)[struct.pack("=I", 5)] == struct.pack("=i", -3)


@pytest.mark.parametrize(
    "map_type", [U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_PERCPU_HASH,
                 U.BPF_MAP_TYPE_LRU_PERCPU_HASH], ids=["percpu_array", "percpu_hash", "lru_percpu"]
)  # fmt: skip
def test_percpu_values_one_per_possible_cpu(map_type: int) -> None:
    """A 4-byte value takes an 8-byte slot per possible CPU; bpftool shows each CPU's."""
    with Map.create(MapSpec("py_percpu", map_type, 4, 4, 4), "I", "I") as m:
        assert m.percpu
        per_cpu = [100 + c for c in range(ncpus())]
        m[1] = per_cpu
        m[2] = 7  # one value: every CPU
        assert m[1] == per_cpu and m[2] == [7] * ncpus()
        with pytest.raises(PyBPFError, match="one per possible CPU"):
            m[3] = [1]
        got = dump(m)
        assert got[struct.pack("=I", 1)] == [struct.pack("=I", v) for v in per_cpu]
        assert got[struct.pack("=I", 2)] == [struct.pack("=I", 7)] * ncpus()


def test_lru_hash_evicts_instead_of_failing() -> None:
    """A full HASH refuses new keys (E2BIG); an LRU_HASH evicts old ones to make room."""
    with Map.create(MapSpec("py_full", U.BPF_MAP_TYPE_HASH, 4, 4, 32), "I", "I") as m:
        for k in range(32):
            m[k] = k
        with pytest.raises(BPFSyscallError, match="E2BIG"):
            m[1000] = 1
    with Map.create(MapSpec("py_lru", U.BPF_MAP_TYPE_LRU_HASH, 4, 4, 32), "I", "I") as m:
        for k in range(500):
            m[k] = k
        assert 499 in m and m[499] == 499
        n = len(dump(m))
        assert 0 < n <= 32 and len(m) == n
        assert 0 not in m  # the first keys were evicted


def test_batch_operations_against_bpftool() -> None:
    """BPF_MAP_*_BATCH (5.6): the same contents as element by element, fewer syscalls."""
    with Map.create(MapSpec("py_batch", U.BPF_MAP_TYPE_HASH, 4, 8, 4096), "I", "Q") as m:
        items = {k: k * k for k in range(3000)}
        assert m.update_batch(items.items()) == 3000
        assert dict(m.lookup_batch(chunk=100)) == items
        assert dump(m) == {struct.pack("=I", k): struct.pack("=Q", v) for k, v in items.items()}
        assert m.delete_batch(range(1000)) == 1000
        assert len(m) == 2000 and 5 not in m
        popped = dict(m.lookup_batch(chunk=64, delete=True))
        assert popped == {k: v for k, v in items.items() if k >= 1000}
        assert len(m) == 0 and dump(m) == {}
    with Map.create(MapSpec("py_pcbatch", U.BPF_MAP_TYPE_PERCPU_HASH, 4, 8, 64), "I", "Q") as m:
        m.update_batch([(1, 5), (2, list(range(ncpus())))])
        assert dict(m.lookup_batch()) == {1: [5] * ncpus(), 2: list(range(ncpus()))}


@pytest.fixture
def bpffs(tmp_path):
    path = str(tmp_path / "bpffs")
    assert mount_bpffs(path) is True
    assert mount_bpffs(path) is False  # already there: nothing to do
    try:
        yield path
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.umount2(path.encode(), 0) == 0, os.strerror(ctypes.get_errno())


def test_pinned_map_outlives_its_fd(bpffs: str) -> None:
    pin = os.path.join(bpffs, "counts")
    with Map.create(MapSpec("py_pinned", U.BPF_MAP_TYPE_HASH, 4, 4, 8), "I", "I") as m:
        m[1] = 11
        map_id = m.info().id
        m.pin(pin)
    # The creating fd is closed; the pin keeps the map (bpftool finds it by path).
    assert bpftool("map", "show", "pinned", pin)["id"] == map_id
    with Map.from_pin(pin, "I", "I") as again:
        assert again.info().id == map_id and again[1] == 11 and again.spec.name == "py_pinned"
    os.unlink(pin)
    with pytest.raises(BPFSyscallError, match="ENOENT"):
        Map.from_pin(pin)


def test_pin_outside_bpffs_says_what_to_do(tmp_path) -> None:
    with Map.create(MapSpec("py_nopin", U.BPF_MAP_TYPE_ARRAY, 4, 4, 1)) as m:
        with pytest.raises(BPFSyscallError, match="mount -t bpf"):
            m.pin(str(tmp_path / "x"))
