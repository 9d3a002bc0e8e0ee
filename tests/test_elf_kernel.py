"""Every libbpf-tools object, loaded by pybpf and by libbpf: same programs refused with the
same errno, the kernel's translated instructions of every other program equal
(normalisation of map references: tests/elf_matrix.py).  Oracle: Debian's libbpf.so.1."""

from __future__ import annotations

import os

import bpf_objects
import libbpf_oracle
import pytest
from elf_matrix import compare_object
from helpers_rq import wait_gone
from policy import unavailable

from pybpf.bpfobject import BPFObject

pytestmark = pytest.mark.kernel

OBJECTS = bpf_objects.objects()


def _need_oracles() -> None:
    if not OBJECTS or not libbpf_oracle.available():
        if os.environ.get("CI") == "true":
            pytest.fail("libbpf-tools and libbpf1 are CI oracles (apt-get install libbpf-tools)")
        unavailable("needs Debian's libbpf-tools and libbpf1")


@pytest.mark.parametrize("name", sorted(OBJECTS) or ["runqslower"])
def test_object_matches_libbpf(name: str, need_root: None) -> None:
    _need_oracles()
    result = compare_object(name, OBJECTS[name])
    assert result.mismatches == []
    assert set(result.loaded) | set(result.refused) == set(result.programs)
    # nothing of ours (or libbpf's) stays loaded, once the kernel's deferred frees ran
    assert not any(wait_gone(result.ids).values())


def test_most_programs_load(need_root: None) -> None:
    """The kernel loads most programs: the comparison is not vacuous."""
    _need_oracles()
    for name in ("runqslower", "runqlat", "biolatency", "execsnoop", "opensnoop"):
        r = compare_object(name, OBJECTS[name])
        assert r.loaded == r.programs, (name, r.refused, r.mismatches)


def test_runqslower_maps_and_globals(need_root: None) -> None:
    """Globals set before load reach the frozen .rodata map; maps read typed by BTF."""
    _need_oracles()
    with BPFObject.open(OBJECTS["runqslower"]) as obj:
        obj.set("min_us", 1234)
        obj.set("targ_tgid", 42)
        assert obj.get("min_us") == 1234
        obj.load(programs=["handle_sched_wakeup", "handle_sched_switch"])
        rodata = obj.map(".rodata")
        value = rodata[0]
        assert value["min_us"] == 1234 and value["targ_tgid"] == 42 and value["targ_pid"] == 0
        with pytest.raises(Exception, match="EPERM|not permitted"):
            rodata[0] = value  # frozen
        obj.maps["start"][7] = 99
        assert obj.maps["start"][7] == 99
    with pytest.raises(Exception, match="no global variable"):
        BPFObject.open(OBJECTS["runqslower"]).set("nope", 1)
