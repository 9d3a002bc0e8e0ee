"""The Debian kernels of the matrix: download, unpack, and the per-kernel boot cache.

A kernel is a stock Debian ``linux-image-*-unsigned`` package, pinned to the versions whose BTF
is in ``btf/`` (so offline relocation and the booted kernel are the same kernel).  Debian drops
an old ABI from its mirrors when it publishes a new one: then the newest package of the same
series is used, and said so.  5.10 (bullseye) and 6.12 (bookworm-backports) come from suites the
system may not list: apt gets a private sources list and state directory under the cache for
the download only; ``/etc/apt`` is never written.

The cache for one kernel release (``<cache>/kernels/<release>/``) holds the uncompressed
``vmlinux`` (QEMU boots it through its PVH note), the ``config``, and an initramfs with static
busybox, the guest ``init`` and the modules a 9p root needs in that kernel, in dependency
order (read from each module's ``.modinfo``).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
INIT = HERE / "init.sh"
BUSYBOX = "/bin/busybox"
# What a 9p root over virtio-pci needs; their dependencies are added from .modinfo.
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")


class VMError(Exception):
    """A harness failure, said in one line."""


@dataclass(frozen=True)
class Kernel:
    alias: str
    package: str  # pinned: the package whose BTF is in btf/
    series: str  # regex of the same series, for when the pinned ABI has left the mirror
    extra_sources: bool  # needs bullseye or bookworm-backports


KERNELS = {
    k.alias: k
    for k in (
        Kernel("5.10", "linux-image-5.10.0-46-amd64-unsigned",
               r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$", True),
        Kernel("6.1", "linux-image-6.1.0-56-amd64-unsigned",
               r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$", False),
        Kernel("6.1-rt", "linux-image-6.1.0-56-rt-amd64-unsigned",
               r"^linux-image-6\.1\.0-[0-9]+-rt-amd64-unsigned$", False),
        Kernel("6.12", "linux-image-6.12.95+deb12-amd64-unsigned",
               r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$", True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class KernelImage:
    """One kernel ready to boot."""

    alias: str
    release: str  # uname -r
    package: str
    version: str
    directory: Path

    @property
    def vmlinux(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def initramfs(self) -> Path:
        return self.directory / "initramfs.cpio"

    @property
    def config(self) -> Path:
        return self.directory / "config"


def cache_dir() -> Path:
    return Path(os.environ.get("PYBPF_VM_CACHE", "/var/cache/pybpf-vm"))


# -- apt -------------------------------------------------------------------------------------


def _system_mirrors() -> tuple[str, str]:
    """The Debian and Debian-security mirror URIs the system's apt already uses."""
    text = ""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*")) + ["/etc/apt/sources.list"]:
        try:
            text += Path(path).read_text() + "\n"
        except OSError:
            pass
    uris = re.findall(r"^URIs:\s*(\S+)", text, re.M)  # deb822
    uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)  # one-line style
    main = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian")), None)
    sec = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    if not main:
        raise VMError("cannot find a Debian mirror in /etc/apt (sources.list.d/*.sources)")
    return main, sec or "http://security.debian.org/debian-security"


def apt_options(extra: bool) -> list[str]:
    """apt-get options: the system's sources, or (``extra``) a private list with bullseye,
    bullseye-security and bookworm-backports added, with its own state directory."""
    if not extra:
        return []
    apt = cache_dir() / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    if not sources.exists():
        main, sec = _system_mirrors()
        sources.write_text(
            f"deb {main} bullseye main\n"
            f"deb {sec} bullseye-security main\n"
            f"deb {main} bookworm-backports main\n"
        )
    opts = [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
    ]  # fmt: skip
    if not glob.glob(str(apt / "lists" / "*Packages*")):
        _run(["apt-get", *opts, "-q", "update"], "apt-get update (bullseye, bookworm-backports)")
    return opts


def _run(cmd: list[str], what: str, cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise VMError(f"{what} failed: {tail}")
    return proc.stdout


def download(kernel: Kernel, log=print) -> Path:
    """The kernel's .deb, downloaded with ``apt-get download`` on first use."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{kernel.package}_*.deb"))
    if found:
        return found[-1]
    opts = apt_options(kernel.extra_sources)
    package = kernel.package
    try:
        log(f"vmtest: downloading {package}")
        _run(["apt-get", *opts, "-q", "download", package], f"apt-get download {package}", debs)
    except VMError as err:
        names = _run(["apt-cache", *opts, "search", "--names-only", kernel.series],
                     "apt-cache search").split()  # fmt: skip
        series = sorted((n for n in names if re.match(kernel.series, n)), key=_version_key)
        if not series:
            raise VMError(f"{kernel.package}: {err}; no other {kernel.series}") from None
        package = series[-1]
        log(f"vmtest: {kernel.package} is gone from the mirror; using {package}")
        _run(["apt-get", *opts, "-q", "download", package], f"apt-get download {package}", debs)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise VMError(f"apt-get download {package} left no .deb in {debs}")
    return found[-1]


def _version_key(name: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", name)]


# -- unpacking -------------------------------------------------------------------------------

_MAGICS = (("xz", b"\xfd7zXZ\x00"), ("zstd", b"\x28\xb5\x2f\xfd"), ("gzip", b"\x1f\x8b\x08"),
           ("lz4", b"\x02\x21\x4c\x18"))  # fmt: skip


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF inside a bzImage: the first compressed stream (by magic) that inflates to ELF,
    as the kernel's scripts/extract-vmlinux finds it."""
    for name, magic in _MAGICS:
        pos = bzimage.find(magic)
        while pos >= 0:
            out = _inflate(name, bzimage[pos:])
            if out[:4] == b"\x7fELF":
                return out
            pos = bzimage.find(magic, pos + 1)
    raise VMError("no ELF vmlinux found inside the bzImage")


def _inflate(name: str, data: bytes) -> bytes:
    try:
        if name == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if name == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        # zstd, lz4: the command line tools stop at the end of the frame and complain
        # about what follows; what they wrote is the payload.
        return subprocess.run([name, "-dc"], input=data, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout  # fmt: skip
    except (lzma.LZMAError, zlib.error, OSError):
        return b""


def _read_module(path: str) -> bytes:
    data = Path(path).read_bytes()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return _inflate("zstd", data)
    return data


def module_depends(ko: bytes) -> list[str]:
    """``depends=`` of a module's ``.modinfo`` section (NUL-separated key=value strings)."""
    if ko[:4] != b"\x7fELF":
        raise VMError("not an ELF module")
    (shoff,) = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", ko, shoff + i * shentsize)
        return name, off, size

    strtab = section(shstrndx)[1]
    for i in range(shnum):
        name, off, size = section(i)
        end = ko.index(b"\0", strtab + name)
        if ko[strtab + name : end] == b".modinfo":
            for entry in ko[off : off + size].split(b"\0"):
                if entry.startswith(b"depends="):
                    return [d for d in entry[8:].decode().split(",") if d]
            return []
    return []


def _norm(name: str) -> str:
    return name.replace("-", "_")


def root_modules(moddir: Path) -> list[tuple[str, bytes]]:
    """The modules (name, ELF) a 9p root needs, dependencies first; built-ins are skipped."""
    index: dict[str, str] = {}
    for root, _dirs, files in os.walk(moddir):
        for fn in files:
            m = re.match(r"(.+)\.ko(\.xz|\.zst|\.gz)?$", fn)
            if m:
                index[_norm(m.group(1))] = os.path.join(root, fn)
    builtin = set()
    if (moddir / "modules.builtin").exists():
        for line in (moddir / "modules.builtin").read_text().split():
            builtin.add(_norm(os.path.basename(line)[: -len(".ko")]))
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = _norm(name)
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin:
                return
            raise VMError(f"module {name} is neither a module nor built in ({moddir.name})")
        ko = _read_module(index[name])
        for dep in module_depends(ko):
            visit(dep)
        order.append((name, ko))

    for name in ROOT_MODULES:
        visit(name)
    return order


def cpio_newc(entries: list[tuple], path: Path) -> None:
    """A newc cpio archive: (name, mode, data[, rdev_major, rdev_minor]); a symlink's data is
    its target."""

    def pad(buf: bytearray) -> None:
        buf += b"\0" * (-len(buf) % 4)

    buf = bytearray()
    for ino, (name, mode, data, *rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        data = data or b""
        major, minor = rdev if rdev else (0, 0)
        bname = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(bname), 0)
        buf += b"070701" + "".join(f"{v:08X}" for v in fields).encode() + bname
        pad(buf)
        buf += data
        pad(buf)
    path.write_bytes(bytes(buf))


# -- the cache -------------------------------------------------------------------------------


def _stamp() -> str:
    """Rebuild a cached kernel when the guest init, this builder or busybox change."""
    h = hashlib.sha256()
    for path in (INIT, Path(__file__), Path(BUSYBOX)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(deb: Path, alias: str) -> KernelImage:
    """Unpack ``deb`` into the cache: vmlinux, config, initramfs."""
    if not os.access(BUSYBOX, os.X_OK):
        raise VMError(f"needs a static busybox at {BUSYBOX} (apt-get install busybox-static)")
    fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], "dpkg-deb -f")
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    root = cache_dir() / "kernels"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix="unpack.") as tmp:
        unpack = Path(tmp)
        _run(["dpkg-deb", "-x", str(deb), str(unpack)], f"dpkg-deb -x {deb.name}")
        vmlinuz = sorted(unpack.glob("boot/vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise VMError(f"{deb.name}: expected one boot/vmlinuz-*, found {len(vmlinuz)}")
        release = vmlinuz[0].name[len("vmlinuz-") :]
        candidates = (unpack / "lib/modules" / release, unpack / "usr/lib/modules" / release)
        moddir = next((d for d in candidates if d.is_dir()), None)
        if moddir is None:
            raise VMError(f"{deb.name}: no modules directory for {release}")
        dest = root / release
        dest.mkdir(exist_ok=True)
        shutil.copy(unpack / "boot" / f"config-{release}", dest / "config")
        (dest / "vmlinux").write_bytes(extract_vmlinux(vmlinuz[0].read_bytes()))
        modules = root_modules(moddir)
    entries: list[tuple] = [(d, 0o40755, None) for d in
                            ("bin", "dev", "proc", "sys", "newroot", "vmrun", "lib",
                             "lib/modules")]  # fmt: skip
    entries += [
        ("dev/console", 0o20600, None, 5, 1),
        ("init", 0o100755, INIT.read_bytes()),
        ("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()),
        ("bin/sh", 0o120777, b"busybox"),
    ]
    entries += [(f"lib/modules/{name}.ko", 0o100644, ko) for name, ko in modules]
    order = "".join(f"{name}\n" for name, _ko in modules).encode()
    entries.append(("lib/modules/load-order", 0o100644, order))
    cpio_newc(entries, dest / "initramfs.cpio")
    (dest / "package").write_text(f"{info['Package']}\n{info['Version']}\n")
    (dest / "stamp").write_text(_stamp())
    (root / f"alias.{alias}").write_text(release)
    return _image(alias, dest)


def _image(alias: str, directory: Path) -> KernelImage:
    package, version = (directory / "package").read_text().split()[:2]
    return KernelImage(alias, directory.name, package, version, directory)


def cached(alias: str) -> Optional[KernelImage]:
    """The cache entry of ``alias`` if it is complete and current."""
    pointer = cache_dir() / "kernels" / f"alias.{alias}"
    if not pointer.exists():
        return None
    directory = pointer.parent / pointer.read_text().strip()
    try:
        if (directory / "stamp").read_text() != _stamp():
            return None
        if not (directory / "initramfs.cpio").exists() or not (directory / "vmlinux").exists():
            return None
        return _image(alias, directory)
    except (OSError, ValueError):
        return None


def prepare(alias: str, log=print) -> KernelImage:
    """A bootable kernel for ``alias`` (5.10, 6.1, 6.1-rt, 6.12), or a path to a
    linux-image .deb: from the cache, else downloaded and built."""
    if alias not in KERNELS:
        if alias.endswith(".deb") and Path(alias).is_file():
            return build(Path(alias).resolve(), Path(alias).stem)
        raise VMError(f"unknown kernel {alias!r}: one of {', '.join(KERNELS)} or a .deb file")
    image = cached(alias)
    if image is not None:
        return image
    deb = download(KERNELS[alias], log)
    log(f"vmtest: building the boot cache from {deb.name}")
    return build(deb, alias)
