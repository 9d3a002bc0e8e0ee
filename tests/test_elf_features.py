"""A compiled object with what libbpf-tools' objects lack (tests/progs/features.bpf.c, built
with clang-19 here): maps of maps and prog arrays with initial slots, a bpf_loop callback,
static and global subprograms, .data/.bss/custom data sections, string literals, CONFIG_
and LINUX_ externs, CO-RE.  Oracle: libbpf loading the same object (same xlated), the
kernel's own view of the maps, /proc/config.gz and uname."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time

import pytest
from elf_matrix import Result, compare_object, compare_together
from helpers_rq import wait_gone
from policy import unavailable

from pybpf.bpfobject import BPFObject, linux_kernel_version
from pybpf.elf import open_file
from pybpf.syscall import map_info, prog_info
from pybpf.uapi import BPF_MAP_TYPE_ARRAY_OF_MAPS

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("clang-19")]

SOURCE = os.path.join(os.path.dirname(__file__), "progs", "features.bpf.c")
AUTOLOAD = ["on_switch", "on_wakeup", "tail_target"]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> str:
    clang = shutil.which("clang-19")
    if clang is None or not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        if os.environ.get("CI") == "true":
            pytest.fail("clang-19 and libbpf-dev are CI oracles")
        unavailable("needs clang-19 and libbpf-dev")
    out = str(tmp_path_factory.mktemp("progs") / "features.bpf.o")
    arch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout
    include = f"/usr/include/{arch.strip() or 'x86_64-linux-gnu'}"
    subprocess.run([clang, "-target", "bpf", "-O2", "-g", "-c", SOURCE, "-o", out, "-I", include],
                   check=True)  # fmt: skip
    return out


def test_parsed(features: str) -> None:
    obj = open_file(features)
    assert obj.autoload == {"on_switch": True, "on_wakeup": True, "tail_target": True,
                            "not_autoloaded": False}  # fmt: skip
    outer = obj.map_spec("outer")
    assert outer.map_type == BPF_MAP_TYPE_ARRAY_OF_MAPS and outer.slots == {0: "inner_a",
                                                                          2: "inner_b"}
    assert outer.inner is not None and outer.inner.max_entries == 4
    assert obj.map_spec("jumps").slots == {1: "tail_target"}
    names = {m.name for m in obj.spec.maps}
    assert {"features.rodata", "features.data", "features.bss", ".data.custom",
            ".rodata.custom", "feature.kconfig"} <= names  # fmt: skip
    # libbpf's layout: alignment descending, then size, then name
    assert [(e.name, e.offset) for e in obj.externs] == [
        ("CONFIG_HZ", 0), ("LINUX_KERNEL_VERSION", 4), ("CONFIG_BPF_SYSCALL", 8),
        ("CONFIG_PYBPF_DOES_NOT_EXIST", 9)]


def test_matches_libbpf(features: str, need_root: None) -> None:
    """Each program alone fails as in libbpf (a prog array's initial program must be
    loaded: EBADF), the three together load with libbpf's translated instructions."""
    res: Result = compare_object("features", features)
    assert res.mismatches == []
    assert res.loaded == ["tail_target"]
    assert {p: e for p, (e, _) in res.refused.items()} == {
        "on_switch": 9, "on_wakeup": 9, "not_autoloaded": 9}
    compare_together(features, AUTOLOAD, res)
    assert res.mismatches == [] and sorted(res.loaded) == sorted(AUTOLOAD)
    assert not any(wait_gone(res.ids).values())


def _config() -> dict[str, str]:
    with gzip.open("/proc/config.gz", "rt") as f:
        return dict(line.strip().split("=", 1) for line in f if line.startswith("CONFIG_"))


def test_runs(features: str, need_root: None) -> None:
    with BPFObject.open(features) as obj:
        obj.set("target_pid", 0)
        obj.load()
        # initial slots, as the kernel reports them: map ids and program ids
        outer = obj.maps["outer"].typed("I", "I")
        assert outer[0] == obj.maps["inner_a"].info().id
        assert outer[2] == obj.maps["inner_b"].info().id
        jumps = obj.maps["jumps"].typed("I", "I")
        assert jumps[1] == prog_info(obj.programs["tail_target"].fileno()).id
        kconfig = obj.map(".kconfig")[0]
        config = _config() if os.path.exists("/proc/config.gz") else {}
        assert kconfig["LINUX_KERNEL_VERSION"] == linux_kernel_version()
        assert kconfig["CONFIG_HZ"] == int(config.get("CONFIG_HZ", "0"))
        assert kconfig["CONFIG_BPF_SYSCALL"] == int(config.get("CONFIG_BPF_SYSCALL") == "y")
        assert kconfig["CONFIG_PYBPF_DOES_NOT_EXIST"] == 0
        assert map_info(obj.map(".kconfig").fd).map_flags & 0x80  # BPF_F_RDONLY_PROG
        obj.attach()
        deadline = time.monotonic() + 5
        while obj.map(".bss")[0]["hits"] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        bss = obj.map(".bss")[0]
        data = obj.map(".data")[0]
        # sched_switch: hits += 1; tail calls from sched_wakeup: hits += add(1, 2) = 5
        assert bss["hits"] >= 10
        assert data["counter"] > 7  # 7 + the loop's sums
        assert obj.map(".data.custom")[0] == {"custom_data": 3}
    with pytest.raises(Exception, match="not loaded"):
        with BPFObject.open(features) as obj:
            obj.load(programs=["on_switch"])
