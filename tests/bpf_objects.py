"""The clang-built BPF objects inside Debian's libbpf-tools binaries (test oracles).

Each tool embeds its ``.bpf.o`` (the skeleton's bytes): an ELF header with e_machine 247
(EM_BPF) inside the executable; its size is where its section header table ends.
"""

from __future__ import annotations

import os
import struct
from typing import Optional

TOOLS_DIR = "/usr/sbin"
EM_BPF = 247


def embedded_objects(data: bytes) -> list[bytes]:
    """Every BPF ELF object found inside ``data``."""
    out = []
    pos = 0
    while True:
        i = data.find(b"\x7fELF\x02\x01", pos)
        if i < 0:
            return out
        pos = i + 1
        if len(data) < i + 64 or struct.unpack_from("<H", data, i + 18)[0] != EM_BPF:
            continue
        shoff = struct.unpack_from("<Q", data, i + 40)[0]
        shentsize, shnum = struct.unpack_from("<HH", data, i + 58)
        end = i + shoff + shentsize * shnum
        if shoff and end <= len(data):
            out.append(data[i:end])
            pos = end


def libbpf_tools() -> list[str]:
    """Paths of libbpf-tools' executables (Debian package file list), symlinks excluded."""
    listing = "/var/lib/dpkg/info/libbpf-tools.list"
    if not os.path.exists(listing):
        return []
    with open(listing) as f:
        paths = [line.strip() for line in f if line.startswith(TOOLS_DIR + "/")]
    return sorted(p for p in paths if os.path.isfile(p) and not os.path.islink(p))


def extract_all(dest: str) -> dict[str, str]:
    """Write ``<tool>.bpf.o`` for every tool into ``dest``; returns tool -> path."""
    os.makedirs(dest, exist_ok=True)
    out = {}
    for tool in libbpf_tools():
        with open(tool, "rb") as f:
            objs = embedded_objects(f.read())
        name = os.path.basename(tool)
        for k, obj in enumerate(objs):
            label = name if k == 0 else f"{name}.{k}"
            path = os.path.join(dest, label + ".bpf.o")
            with open(path, "wb") as f:
                f.write(obj)
            out[label] = path
    return out


_CACHE: Optional[dict[str, str]] = None


def objects() -> dict[str, str]:
    """The extracted objects, once per test run (in $TMPDIR/pybpf-libbpf-tools-UID: a
    directory of another user's is not ours to write)."""
    global _CACHE
    if _CACHE is None:
        import tempfile

        where = f"pybpf-libbpf-tools-{os.getuid()}"
        _CACHE = extract_all(os.path.join(tempfile.gettempdir(), where))
    return _CACHE
