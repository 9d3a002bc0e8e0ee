"""``pybpf btf dump`` against bpftool's raw dump: every blob in btf/, the running kernel,
every kind (the encoder's all-kinds blob, both byte orders), split BTF, and CLI errors.

The oracle is ``bpftool btf dump file F format raw``; nothing expected is typed in here.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from policy import require_tools, unavailable
from test_btf import BLOBS, build_all_kinds, make_elf, make_split

from pybpf.btf import BTF, KIND_NAMES
from pybpf.btf_dump import dump_raw

pytestmark = pytest.mark.oracle("bpftool")

ROOT = Path(__file__).resolve().parent.parent
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")


def need_bpftool() -> None:
    require_tools("bpftool")


def bpftool_raw(path: Path, *base: str) -> str:
    return subprocess.run(["bpftool", "btf", "dump", *base, "file", str(path), "format", "raw"],
                          check=True, capture_output=True, text=True).stdout


def pybpf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.parametrize("blob", [p.name for p in BLOBS] + ["running-kernel"])
def test_dump_equals_bpftool(blob: str, tmp_path: Path) -> None:
    """The CLI on the .xz file (bpftool needs it decompressed) equals bpftool, byte for byte."""
    need_bpftool()
    if blob == "running-kernel":
        if not KERNEL_BTF.exists():
            pytest.skip("kernel has no BTF")
        ours = pybpf("btf", "dump")  # default: the running kernel
        want = bpftool_raw(KERNEL_BTF)
    else:
        raw = tmp_path / blob.replace(".xz", "")
        raw.write_bytes(lzma.decompress((ROOT / "btf" / blob).read_bytes()))
        ours = pybpf("btf", "dump", "--btf", str(ROOT / "btf" / blob), "--format", "raw")
        want = bpftool_raw(raw)
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == ""
    assert ours.stdout.count("\n") == want.count("\n") > 100000
    assert ours.stdout == want


@pytest.mark.parametrize("order", ["little", "big"])
def test_every_kind(order: str, tmp_path: Path) -> None:
    need_bpftool()
    builder, expected = build_all_kinds()
    path = tmp_path / "all.btf"
    path.write_bytes(builder.encode(order))
    ours = list(dump_raw(BTF.from_file(path)))
    assert ours == bpftool_raw(path).splitlines()
    kinds = {line.split()[1] for line in ours if line.startswith("[")}
    assert kinds == set(KIND_NAMES.values()) - {"UNKNOWN"}


def test_split_dump(tmp_path: Path) -> None:
    need_bpftool()
    base, data = make_split()
    (tmp_path / "base").write_bytes(BTF_BASE := base._data)
    (tmp_path / "split").write_bytes(data)
    assert BTF_BASE
    ours = pybpf("btf", "dump", "--btf", str(tmp_path / "split"), "--base", str(tmp_path / "base"))
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == bpftool_raw(tmp_path / "split", "-B", str(tmp_path / "base"))
    assert ours.stdout.startswith("[2] PTR")


@pytest.mark.parametrize("args,message", [
    (["btf", "dump", "--btf", "/nonexistent/x.btf"], "cannot read BTF"),
    (["btf", "dump", "--btf", "README.md"], "bad BTF magic"),
    (["btf", "show", "no_such_type_anywhere", "--btf", "btf/debian-5.10.0-46-amd64.btf.xz"],
     "no_such_type_anywhere"),
    (["btf", "frobnicate"], "unknown btf command"),
])
def test_cli_errors(args: list[str], message: str) -> None:
    r = pybpf(*args)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybpf: error: ") and message in lines[0]
    assert "Traceback" not in r.stderr


def test_dump_bad_format() -> None:
    r = pybpf("btf", "dump", "--format", "c")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_longer_header_honoured(tmp_path: Path) -> None:
    """hdr_len > 24 (a newer header with zeroed extra fields): sections are relative to it."""
    need_bpftool()
    data = build_all_kinds()[0].encode()
    magic_ver_flags, _hdr_len, *offsets = struct.unpack_from("<IIIIII", data)
    longer = struct.pack("<IIIIII", magic_ver_flags, 32, *offsets) + bytes(8) + data[24:]
    path = tmp_path / "h32.btf"
    path.write_bytes(longer)
    ours = list(dump_raw(BTF.from_file(path)))
    assert ours == list(dump_raw(BTF.from_bytes(data)))
    assert ours == bpftool_raw(path).splitlines()


def test_split_btf_in_elf(tmp_path: Path) -> None:
    """A module-like ELF whose .BTF is split BTF, dumped on top of its base."""
    need_bpftool()
    base, data = make_split()
    (tmp_path / "base").write_bytes(base._data)
    (tmp_path / "mod.ko").write_bytes(make_elf(data))
    ours = pybpf("btf", "dump", "--btf", str(tmp_path / "mod.ko"), "--base",
                 str(tmp_path / "base"))
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == bpftool_raw(tmp_path / "mod.ko", "-B", str(tmp_path / "base"))


def _objcopy() -> str:
    for tool in ("llvm-objcopy-19", "llvm-objcopy", "objcopy"):
        if shutil.which(tool):
            return tool
    unavailable("needs an objcopy (.ci/run installs llvm-19)")


def test_real_elf_with_btf_section(tmp_path: Path) -> None:
    """A real ELF executable given a .BTF section by objcopy (as pahole -J does for vmlinux
    and modules): pybpf reads it as bpftool does."""
    need_bpftool()
    blob = tmp_path / "k.btf"
    blob.write_bytes(lzma.decompress((ROOT / "btf" / BLOBS[0].name).read_bytes()))
    elf = tmp_path / "with_btf"
    subprocess.run([_objcopy(), "--add-section", f".BTF={blob}", "/bin/true", str(elf)],
                   check=True, capture_output=True)
    ours = pybpf("btf", "dump", "--btf", str(elf))
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == bpftool_raw(elf) == bpftool_raw(blob)
