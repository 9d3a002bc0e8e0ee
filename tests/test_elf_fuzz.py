"""Bad input: truncated, mutated and non-BPF ELF files give one PyBPFError (one line from
the CLI), never another exception; a mutated object that loads partly leaves nothing in
the kernel once closed."""

from __future__ import annotations

import os
import sys

import bpf_objects
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy import unavailable

from pybpf.bpfobject import BPFObject
from pybpf.btf import BTF
from pybpf.cli import main
from pybpf.elf import ElfError, parse_object
from pybpf.errors import PyBPFError

OBJECTS = bpf_objects.objects()
NAMES = ["runqslower", "biolatency", "javagc", "klockstat", "cpufreq"]


def _obj(name: str) -> bytes:
    if name not in OBJECTS:
        if os.environ.get("CI") == "true":
            pytest.fail("libbpf-tools is a CI oracle (apt-get install libbpf-tools)")
        unavailable("needs Debian's libbpf-tools")
    with open(OBJECTS[name], "rb") as f:
        return f.read()


_TARGET = None


def _target() -> BTF:
    global _TARGET
    if _TARGET is None:
        _TARGET = BTF.kernel()
    return _TARGET


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(NAMES), frac=st.floats(0, 1, exclude_max=True))
def test_truncated(name: str, frac: float) -> None:
    data = _obj(name)
    with pytest.raises(PyBPFError):
        parse_object(data[: int(len(data) * frac)], name)


def _regions(data: bytes) -> list[tuple[int, int]]:
    """Where mutations matter most: ELF header, each section (code, relocations, symbols,
    .BTF.ext, .maps, data) and the section header table, each as likely as .BTF."""
    from pybpf.elf.reader import ElfFile

    elf = ElfFile(data)
    out = [(0, 64)]
    out += [(s.offset, s.size) for s in elf.sections if s.size and s.type != 8]
    shoff = int.from_bytes(data[40:48], "little")
    out.append((shoff, len(data) - shoff))
    return out


def _mutate(data: bytes, edits: list[tuple[int, float, int]]) -> bytes:
    buf = bytearray(data)
    regions = _regions(data)
    for region, where, value in edits:
        start, size = regions[region % len(regions)]
        buf[start + int(where * size)] = value
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 100), st.floats(0, 1, exclude_max=True),
                           st.integers(0, 255)), min_size=1, max_size=6)  # fmt: skip


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(NAMES), edits=EDITS)
def test_mutated_parse_and_prepare(name: str, edits: list[tuple[int, float, int]]) -> None:
    """Parsing and relocating a mutated object: success, or one PyBPFError."""
    data = _mutate(_obj(name), edits)
    try:
        obj = BPFObject(parse_object(data, name))
        obj.prepare(_target(), [p.name for p in obj.elf.spec.programs], attach_ids=False)
    except PyBPFError as err:
        assert str(err) and "\n" not in str(err).splitlines()[0]


def _bpf_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:bpf"):
                n += 1
        except OSError:
            pass
    return n


@pytest.mark.kernel
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=EDITS)
def test_mutated_load_leaves_nothing(edits: list[tuple[int, float, int]], need_root: None) -> None:
    """Mutations of runqslower, region by region: loading succeeds or fails with a
    PyBPFError, and close() frees everything."""
    data = _obj("runqslower")
    before = _bpf_fds()
    try:
        obj = BPFObject(parse_object(_mutate(data, edits), "runqslower"))
        with obj:
            obj.load(programs=["handle_sched_wakeup", "handle_sched_switch"])
    except PyBPFError:
        pass
    assert _bpf_fds() == before


def test_not_bpf() -> None:
    with open(sys.executable, "rb") as f:
        data = f.read(1 << 20)
    with pytest.raises(ElfError, match="not BPF|section header"):
        parse_object(data, "python")
    with pytest.raises(ElfError, match="not an ELF file"):
        parse_object(b"#!/bin/sh\n" * 20, "script")


@pytest.mark.parametrize("command", ["explain", "dump", "run"])
def test_cli_bad_object(command: str, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(_obj("runqslower")[:4000])
    assert main([command, str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybpf: error: ") and err.count("\n") == 1, err
