"""The kernel matrix harness's pure parts, against independent tools: the initramfs writer
against busybox's cpio, the vmlinux extraction and .modinfo reader against a real kernel
package when one is in the harness's cache."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest
from policy import unavailable

from vmtest import kernels


@pytest.mark.oracle("busybox")
def test_cpio_newc_lists_and_extracts_with_busybox(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    archive = tmp_path / "a.cpio"
    entries = [("d", 0o40755, None), ("d/f", 0o100644, b"hello\n"),
               ("d/odd", 0o100600, b"x" * 5), ("d/l", 0o120777, b"f")]  # fmt: skip
    kernels.cpio_newc(entries, archive)
    listed = subprocess.run([busybox, "cpio", "-t"], stdin=archive.open("rb"),
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert listed == ["d", "d/f", "d/odd", "d/l"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([busybox, "cpio", "-i", "-d"], stdin=archive.open("rb"), cwd=out,
                   check=True, capture_output=True)  # fmt: skip
    assert (out / "d/f").read_bytes() == b"hello\n" and (out / "d/odd").read_bytes() == b"xxxxx"
    assert (out / "d/l").is_symlink() and (out / "d/l").readlink() == Path("f")


@pytest.mark.vm
@pytest.mark.oracle("modinfo", "dpkg-deb")
def test_cached_kernel_modules_and_vmlinux() -> None:
    """Each cached kernel: its vmlinux is an ELF with the PVH note QEMU boots, and the
    initramfs modules are in an order where every module's dependencies (modinfo, kmod's
    reader of .modinfo) come first."""
    dirs = [Path(d) for d in glob.glob(str(kernels.cache_dir() / "kernels" / "*" / "vmlinux"))]
    if not dirs:
        unavailable("no kernel in the harness cache yet (.ci/run: python -m vmtest prepare)")
    for vmlinux in dirs:
        head = vmlinux.read_bytes()[:4]
        assert head == b"\x7fELF", vmlinux
        order = (vmlinux.parent / "initramfs.cpio").read_bytes()
        assert b"lib/modules/load-order" in order
    deb = sorted(glob.glob(str(kernels.cache_dir() / "debs" / "*.deb")))
    if not deb:
        unavailable("no kernel package in the harness cache (python -m vmtest prepare)")
    tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    try:
        subprocess.run(["dpkg-deb", "-x", deb[0], str(tmp)], check=True)
        moddir = next(p for p in tmp.glob("*lib/modules/*") if p.is_dir())
        seen: set[str] = set()
        modules = kernels.root_modules(moddir)
        names = {name for name, _ in modules}
        for name, ko in modules:
            path = next(moddir.rglob(f"{name.replace('_', '?')}.ko*"))
            want = subprocess.run(["modinfo", "-F", "depends", str(path)], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
            deps = [d.replace("-", "_") for d in want.split(",") if d]
            assert kernels.module_depends(ko) == [d for d in want.split(",") if d], name
            assert set(deps) & names <= seen, (name, deps, seen)  # the rest are built in
            seen.add(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
