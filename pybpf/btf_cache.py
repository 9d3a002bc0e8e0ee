"""On-disk cache of kernel BTF and what parsing it computes: warm starts in ~2 ms.

Every start pays for reading vmlinux BTF (5.5 MB from sysfs, ~6 ms of page faults into fresh
memory), indexing its 127k types (~10 ms) and each name look-up (~1 ms).  The cache keeps, per
BTF blob, the type offset index and the results of the look-ups a run made
(``BTF.find``/``find_prefix``) and restores them on the next run.

Two kinds of cache file, both keyed by the BTF's identity and by the code that computed them
(pybpf's version, this file format and a CRC-32 of ``btf.py`` and this module's source, so a
changed parser never reads its predecessor's answers):

* ``/sys/kernel/btf/vmlinux``: identity = the kernel's GNU build ID (``/sys/kernel/notes``),
  the BTF's size and its 24-byte header (read with one small ``pread``).  The same build ID
  means the same kernel image, hence the same BTF.  The file holds a copy of the BTF too and
  is ``mmap``-ed: a warm start reads no sysfs data.
* any other raw BTF file: identity = size + CRC-32 of the bytes (recomputed on every hit,
  ~0.8 ms for 5.5 MB); the file holds the index and look-ups only.

Rules: on by default; ``PYBPF_BTF_CACHE=0`` turns it off.  A cold start is not slower (one
failed ``open``; files are written at interpreter exit, never on the start-up path).  Never
stale (identity checked on every hit, else ignored and rewritten).  Never wrong: everything
before the trailer, the BTF copy included, carries a CRC-32 checked on every hit, so a torn,
truncated or bit-flipped file is ignored (the CRC is no defence against someone who can write
the directory: the directory is the user's own, 0700, and files not owned by the current user
are never read).  Safe when shared: a writer writes a temporary file of its own
(``O_EXCL``, a random name) and renames it over the old one, so readers see a whole old or a
whole new file.  Any problem (unwritable or missing directory, no ``$HOME``) means a normal
parse and nothing written.

Directory: ``$PYBPF_BTF_CACHE`` if it is an absolute path, else ``$XDG_CACHE_HOME/pybpf`` or
``~/.cache/pybpf``.  Used for the running kernel by :meth:`pybpf.btf.BTF.kernel`, or directly
through :func:`load_cached`.
"""

from __future__ import annotations

import atexit
import marshal
import os
import struct
import sys
import zlib
from typing import Optional

from pybpf.btf import BTF, PathLike
from pybpf.errors import BTFError

VMLINUX = "/sys/kernel/btf/vmlinux"
KERNEL_NOTES = "/sys/kernel/notes"
FORMAT = 2
_MAGIC = b"pybpfBTFcache\0\0" + bytes([FORMAT])  # last byte: format version
# trailer at the end of a cache file: magic, btf_len, index_len, memo_len, crc of everything
# before the trailer (BTF copy, index, memo), identity (build id or CRC, code tag; padded)
_TRAILER = struct.Struct("<16sQQQI64s")
_pending: dict[str, tuple[BTF, bytes, bool]] = {}  # cache file -> (btf, identity, with_data)
_OFF = ("0", "off", "no", "false")


def enabled() -> bool:
    """False when ``PYBPF_BTF_CACHE`` is ``0`` (or off/no/false)."""
    return os.environ.get("PYBPF_BTF_CACHE", "").strip().lower() not in _OFF


def cache_dir() -> str:
    """The cache directory ("" when there is none: no ``$HOME``, no absolute path)."""
    env = os.environ.get("PYBPF_BTF_CACHE", "")
    if os.path.isabs(env):
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "pybpf")
    return path if os.path.isabs(path) else ""  # "~" unexpanded: never relative to the cwd


_code_tag: Optional[bytes] = None


def code_tag() -> bytes:
    """4 bytes naming the code that computes what the cache stores: pybpf's version, the file
    format and the source of btf.py and of this module (a development checkout changes them
    without changing the version)."""
    global _code_tag
    if _code_tag is None:
        from pybpf import __version__
        from pybpf import btf as _btf

        crc = zlib.crc32(f"{__version__}\0{FORMAT}\0".encode())
        for path in (_btf.__file__, __file__):
            try:
                with open(path, "rb") as f:
                    crc = zlib.crc32(f.read(), crc)
            except (OSError, TypeError):
                crc = zlib.crc32(b"?", crc)
        _code_tag = struct.pack("<I", crc)
    return _code_tag


def kernel_build_id(notes: str = KERNEL_NOTES) -> Optional[bytes]:
    """The running kernel's GNU build ID (NT_GNU_BUILD_ID note of vmlinux), if exposed."""
    try:
        with open(notes, "rb") as f:
            data = f.read()
    except OSError:
        return None
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name_end = off + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            return None
        if ntype == 3 and data[off + 12:off + 12 + namesz] == b"GNU\0":
            return data[name_end:name_end + descsz]
        off = desc_end
    return None


def load_cached(path: PathLike = VMLINUX, directory: Optional[str] = None) -> BTF:
    """``BTF.from_file(path)`` for raw BTF, reusing and later refreshing the on-disk cache."""
    directory = directory or cache_dir()
    if not directory:
        return BTF.from_file(path)
    if os.path.realpath(path) == VMLINUX:
        build_id = kernel_build_id()
        if build_id:
            return _load_vmlinux(build_id, directory)
    return _load_file(path, directory)


def _load_vmlinux(build_id: bytes, directory: str) -> BTF:
    try:
        fd = os.open(VMLINUX, os.O_RDONLY)
        try:
            header = os.pread(fd, 24, 0)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as e:
        raise BTFError(f"cannot read BTF from {VMLINUX}: {e.strerror}") from None
    tag = code_tag()
    identity = build_id + struct.pack("<Q", size) + header + tag
    cfile = os.path.join(directory, f"vmlinux-{build_id.hex()}-{size}-{tag.hex()}.btfc")
    btf = _hit(cfile, identity, with_data=True)
    if btf is None:
        with open(VMLINUX, "rb") as f:
            data = f.read()
        if len(data) != size or data[:24] != header:  # sysfs reported another size
            identity = build_id + struct.pack("<Q", len(data)) + data[:24] + tag
        btf = BTF.from_bytes(data)
        btf._find_memo = {}
    _remember(cfile, btf, identity, True)
    return btf


def _load_file(path: PathLike, directory: str) -> BTF:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BTFError(f"cannot read BTF from {os.fspath(path)}: {e.strerror}") from None
    if data[:2] not in (b"\x9f\xeb", b"\xeb\x9f"):
        return BTF.from_file(path)  # .xz or ELF: parsed as usual, not cached
    ident = f"{os.path.realpath(path)}\0{sys.version_info[:2]}".encode()
    tag = code_tag()
    cfile = os.path.join(directory, f"btf-{zlib.crc32(ident):08x}-{len(data)}-{tag.hex()}.btfc")
    identity = struct.pack("<QI", len(data), zlib.crc32(data)) + tag
    btf = _hit(cfile, identity, with_data=False, data=data)
    if btf is None:
        btf = BTF.from_bytes(data)
        btf._find_memo = {}
    _remember(cfile, btf, identity, False)
    return btf


def _fit(identity: bytes) -> bytes:
    """The identity as the trailer holds it: itself, or its SHA-256 when longer than 64 bytes
    (a kernel with a 32-byte build ID)."""
    if len(identity) <= 64:
        return identity
    import hashlib

    return hashlib.sha256(identity).digest()


def _hit(cfile: str, identity: bytes, with_data: bool, data: bytes = b"") -> Optional[BTF]:
    """The BTF from a current cache file, or None (missing, stale, foreign or damaged)."""
    import mmap

    try:
        with open(cfile, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_size < _TRAILER.size:
                return None
            f.seek(st.st_size - _TRAILER.size)
            magic, btf_len, index_len, memo_len, crc, ident = _TRAILER.unpack(
                f.read(_TRAILER.size))
            if magic != _MAGIC or ident.rstrip(b"\0") != _fit(identity).rstrip(b"\0"):
                return None
            start = btf_len if with_data else 0
            body = start + index_len + memo_len
            if body + _TRAILER.size != st.st_size:
                return None
            # The CRC of everything, the BTF copy too, so a flipped bit is never used.  Read
            # through one small buffer rather than the mapping: pages of a mapping count in
            # RSS once touched, the page cache behind read() does not.
            f.seek(0)
            if _crc_of(f, body) != crc:
                return None
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        tail = mm[start:body]
        memo = marshal.loads(tail[index_len:])
        if not isinstance(memo, dict):
            return None
        btf = BTF.from_bytes(mm if with_data else data, _index=tail[:index_len])
    except (OSError, ValueError, EOFError, TypeError, struct.error, BTFError):
        return None
    btf._find_memo = memo
    return btf


def _crc_of(f: object, size: int) -> int:
    """CRC-32 of the next ``size`` bytes of the unbuffered file ``f`` (-1 if it is shorter)."""
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    crc = 0
    while size > 0:
        n = f.readinto(view[: min(size, len(buf))])  # type: ignore[attr-defined]
        if not n:
            return -1
        crc = zlib.crc32(view[:n], crc)
        size -= n
    view.release()
    return crc


def _remember(cfile: str, btf: BTF, identity: bytes, with_data: bool) -> None:
    if not _pending:
        atexit.register(save_all)
    btf.__dict__["_cache_state"] = dict(btf._find_memo or {})
    _pending[cfile] = (btf, identity, with_data)


def save_all() -> None:
    """Write the cache files of this process's BTFs that learned something (at exit)."""
    for cfile, (btf, identity, with_data) in list(_pending.items()):
        try:
            _save(cfile, btf, identity, with_data)
        except (OSError, ValueError):
            pass
    _pending.clear()


def _save(cfile: str, btf: BTF, identity: bytes, with_data: bool) -> None:
    memo = btf._find_memo or {}
    if os.path.exists(cfile) and memo == btf.__dict__.get("_cache_state"):
        return  # the file is current
    index = btf._offs.tobytes()
    tail = index + marshal.dumps(memo)
    data = bytes(btf._data[:btf._se]) if with_data else b""
    trailer = _TRAILER.pack(_MAGIC, len(data), len(index), len(tail) - len(index),
                            zlib.crc32(tail, zlib.crc32(data)), _fit(identity))
    os.makedirs(os.path.dirname(cfile), mode=0o700, exist_ok=True)
    # A name no other writer (process, thread, PID namespace) picks; O_EXCL makes sure.
    tmp = f"{cfile}.{os.getpid()}-{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.write(tail)
            f.write(trailer)
        os.replace(tmp, cfile)  # atomic: readers see the old file or this one, whole
        btf.__dict__["_cache_state"] = dict(memo)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
