"""BPF maps from user space: create, read, write, iterate, batch, pin, freeze.

Two levels.  :meth:`Map.lookup`, :meth:`Map.update`, :meth:`Map.delete`, :meth:`Map.keys`
take raw ``bytes`` of the map's key and value sizes, as libbpf's ``bpf_map_*_elem`` do; for
per-CPU maps a raw value is one 8-byte-aligned slot per *possible* CPU, concatenated, as the
kernel copies it.  On top, a Map is a Python mapping (``m[k]``, ``m[k] = v``, ``del m[k]``,
``in``, ``len``, iteration, ``items()``, ``values()``) whose keys and values are converted by
optional *types*: a :mod:`struct` format (``"I"``, ``"<QI"``) or ``struct.Struct`` (a
one-field format gives scalars, more give tuples), or any object with ``pack``/``unpack``.
Without types, keys and values stay ``bytes``.  Per-CPU values read as a list with one value
per possible CPU; a write takes such a list, or one value stored on every CPU.

Batch operations (5.6) move many elements per syscall; pinning (4.4) names a map in a bpffs.
"""

from __future__ import annotations

import errno as _errno
import struct
from typing import Any, Iterable, Iterator, Optional, Union

from . import syscall as _sys
from .errors import BPFSyscallError, PyBPFError
from .object import MapSpec
from .uapi import (
    BPF_ANY,
    BPF_MAP_TYPE_LRU_PERCPU_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
    BPF_MAP_TYPE_PERCPU_HASH,
)

_PERCPU_TYPES = frozenset(
    {
        BPF_MAP_TYPE_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        BPF_MAP_TYPE_LRU_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
    }
)


TypeSpec = Union[None, str, "struct.Struct", Any]


class _Bytes:
    """The identity conversion: raw bytes of a fixed size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def pack(self, value: bytes) -> bytes:
        return bytes(value)

    def unpack(self, data: bytes) -> bytes:
        return bytes(data)


class _StructCodec:
    """A struct format: one field packs a scalar, several a tuple."""

    def __init__(self, st: struct.Struct) -> None:
        self.st = st
        self.size = st.size
        self.scalar = len(st.unpack(bytes(st.size))) == 1

    def pack(self, value: Any) -> bytes:
        return self.st.pack(value) if self.scalar else self.st.pack(*value)

    def unpack(self, data: bytes) -> Any:
        out = self.st.unpack_from(data)
        return out[0] if self.scalar else out


def _codec(t: TypeSpec, size: int, what: str) -> Any:
    if t is None:
        return _Bytes(size)
    if isinstance(t, str):
        t = struct.Struct(t if t[:1] in "@=<>!" else "=" + t)
    codec = _StructCodec(t) if isinstance(t, struct.Struct) else t
    csize = getattr(codec, "size", size)
    if csize != size:
        raise PyBPFError(f"{what} type is {csize} bytes, the map's {what} is {size} bytes")
    return codec


class Map(_sys.Closing):
    """A live BPF map owning its fd; closing the last fd (and no program using it) frees it.

    ``key_type``/``value_type``: how the mapping API converts keys and values (see the module
    docstring); the raw methods ignore them."""

    def __init__(
        self, spec: MapSpec, fd: _sys.FD, key_type: TypeSpec = None, value_type: TypeSpec = None
    ) -> None:
        self.spec = spec
        self._fd = fd
        self._value_buf_size = spec.value_size
        self._ncpus = 0
        if spec.map_type in _PERCPU_TYPES:
            # Per-CPU values are copied as one 8-byte-aligned slot per possible CPU.
            self._ncpus = len(_sys.possible_cpus())
            self._value_buf_size = self._slot * self._ncpus
        self._key = _codec(key_type, spec.key_size, "key")
        self._value = _codec(value_type, spec.value_size, "value")

    @property
    def _slot(self) -> int:
        return (self.spec.value_size + 7) & ~7

    @property
    def percpu(self) -> bool:
        """True for per-CPU maps, whose values read as one value per possible CPU."""
        return self._ncpus > 0

    def typed(self, key_type: TypeSpec = None, value_type: TypeSpec = None) -> Map:
        """Set the key and value types of the mapping API; returns the map itself."""
        self._key = _codec(key_type, self.spec.key_size, "key")
        self._value = _codec(value_type, self.spec.value_size, "value")
        return self

    @classmethod
    def create(cls, spec: MapSpec, key_type: TypeSpec = None, value_type: TypeSpec = None) -> Map:
        """BPF_MAP_CREATE from ``spec``; the name is truncated to 15 characters."""
        fd = _sys.map_create(
            spec.map_type,
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.flags,
            spec.name,
            btf_fd=spec.btf_fd,
            btf_key_type_id=spec.btf_key_type_id,
            btf_value_type_id=spec.btf_value_type_id,
            inner_map_fd=spec.inner_map_fd,
            map_extra=spec.map_extra,
        )
        return cls(spec, fd, key_type, value_type)

    @classmethod
    def from_id(cls, map_id: int, key_type: TypeSpec = None, value_type: TypeSpec = None) -> Map:
        """Open an existing map by id (BPF_MAP_GET_FD_BY_ID) with a spec read back from it."""
        return cls._from_fd(_sys.map_get_fd_by_id(map_id), key_type, value_type)

    @classmethod
    def from_pin(cls, path: str, key_type: TypeSpec = None, value_type: TypeSpec = None) -> Map:
        """Open a map pinned in a bpffs (BPF_OBJ_GET, 4.4)."""
        return cls._from_fd(_sys.obj_get(path), key_type, value_type)

    def pin(self, path: str) -> None:
        """Pin the map at ``path`` in a bpffs (BPF_OBJ_PIN, 4.4): it then outlives this
        process until the file is removed (``os.unlink(path)``)."""
        _sys.obj_pin(self.fd, path)

    @classmethod
    def _from_fd(cls, fd: _sys.FD, key_type: TypeSpec, value_type: TypeSpec) -> Map:
        info = _sys.map_info(fd.fileno())
        spec = MapSpec(
            name=info.name,
            map_type=info.type,
            key_size=info.key_size,
            value_size=info.value_size,
            max_entries=info.max_entries,
            flags=info.map_flags,
            btf_key_type_id=info.btf_key_type_id,
            btf_value_type_id=info.btf_value_type_id,
            map_extra=info.map_extra,
        )
        return cls(spec, fd, key_type, value_type)

    # -- fd ownership -------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        return self._fd.fileno()

    def fileno(self) -> int:
        return self._fd.fileno()

    def close(self) -> None:
        self._fd.close()

    def __repr__(self) -> str:
        return f"Map({self.spec.name!r}, type={self.spec.map_type}, fd={self._fd!r})"

    # -- elements -----------------------------------------------------------------------------

    @property
    def value_buf_size(self) -> int:
        """Bytes a value occupies in user space (all CPUs' slots for per-CPU maps)."""
        return self._value_buf_size

    def _check(self, what: str, data: bytes, size: int) -> None:
        if len(data) != size:
            raise PyBPFError(
                f"map {self.spec.name!r}: {what} must be {size} bytes, got {len(data)}"
            )

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Insert or replace (BPF_ANY), insert only (BPF_NOEXIST) or replace only (BPF_EXIST)."""
        self._check("key", key, self.spec.key_size)
        self._check("value", value, self._value_buf_size)
        _sys.map_update_elem(self.fd, key, value, flags)

    def lookup(self, key: bytes) -> Optional[bytes]:
        """The value at ``key``, or None if absent."""
        self._check("key", key, self.spec.key_size)
        return _sys.map_lookup_elem(self.fd, key, self._value_buf_size)

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was not there (array elements cannot be deleted)."""
        self._check("key", key, self.spec.key_size)
        return _sys.map_delete_elem(self.fd, key)

    def keys(self) -> Iterator[bytes]:
        """Iterate keys with BPF_MAP_GET_NEXT_KEY.

        As in the kernel, deleting the current key during iteration makes a hash map restart
        from its first key: collect keys first (``list(m.keys())``) to delete while walking.
        """
        fd, size = self.fd, self.spec.key_size
        key = _sys.map_get_next_key(fd, None, size)
        while key is not None:
            yield key
            key = _sys.map_get_next_key(fd, key, size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs; keys deleted concurrently are skipped."""
        for key in self.keys():
            value = _sys.map_lookup_elem(self.fd, key, self._value_buf_size)
            if value is not None:
                yield key, value

    def freeze(self) -> None:
        """Make the map read-only for user space (BPF_MAP_FREEZE, 5.2); updates then fail
        with EPERM.  Combine with BPF_F_RDONLY_PROG for constants such as ``.rodata``."""
        _sys.map_freeze(self.fd)

    def info(self) -> _sys.MapInfo:
        """The kernel's view of the map (id, name, flags, ...)."""
        return _sys.map_info(self.fd)

    # -- the mapping API (typed) --------------------------------------------------------------

    def _decode(self, raw: bytes) -> Any:
        if not self._ncpus:
            return self._value.unpack(raw)
        slot, size = self._slot, self.spec.value_size
        return [self._value.unpack(raw[i : i + size]) for i in range(0, len(raw), slot)]

    def _encode(self, value: Any) -> bytes:
        if not self._ncpus:
            return self._value.pack(value)
        values = value if isinstance(value, list) else [value] * self._ncpus
        if len(values) != self._ncpus:
            raise PyBPFError(
                f"map {self.spec.name!r}: a per-CPU value needs {self._ncpus} "
                f"value{'' if self._ncpus == 1 else 's'} (one per possible CPU), got {len(values)}"
            )
        pad = bytes(self._slot - self.spec.value_size)
        return b"".join(self._value.pack(v) + pad for v in values)

    def __getitem__(self, key: Any) -> Any:
        raw = self.lookup(self._key.pack(key))
        if raw is None:
            raise KeyError(key)
        return self._decode(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        raw = self.lookup(self._key.pack(key))
        return default if raw is None else self._decode(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(self._key.pack(key), self._encode(value))

    def __delitem__(self, key: Any) -> None:
        if not self.delete(self._key.pack(key)):
            raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return self.lookup(self._key.pack(key)) is not None

    def __iter__(self) -> Iterator[Any]:
        unpack = self._key.unpack
        return (unpack(k) for k in self.keys())

    def __len__(self) -> int:
        """Elements present (array maps: always max_entries), counted by iteration."""
        return sum(1 for _ in self.keys())

    def values(self) -> Iterator[Any]:
        return (v for _, v in self.typed_items())

    def typed_items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs converted by the map's types."""
        unpack, decode = self._key.unpack, self._decode
        for k, v in self.items():
            yield unpack(k), decode(v)

    # -- batch operations (5.6) ---------------------------------------------------------------

    def lookup_batch(self, chunk: int = 256, *, delete: bool = False) -> Iterator[tuple[Any, Any]]:
        """Every (key, value), ``chunk`` per BPF_MAP_LOOKUP_BATCH (or ..._AND_DELETE_BATCH
        with ``delete=True``, hash maps only): one syscall per chunk instead of two per key."""
        ks, vs = self.spec.key_size, self._value_buf_size
        call = _sys.map_lookup_and_delete_batch if delete else _sys.map_lookup_batch
        unpack, decode = self._key.unpack, self._decode
        token: Optional[bytes] = None
        while True:
            try:
                keys, values, n, token = call(self.fd, ks, vs, chunk, token)
            except BPFSyscallError as err:
                if err.errno == _errno.ENOSPC and chunk < self.spec.max_entries:
                    chunk *= 2  # a hash bucket holds more elements than fit: retry bigger
                    continue
                raise
            for i in range(n):
                yield unpack(keys[i * ks : (i + 1) * ks]), decode(values[i * vs : (i + 1) * vs])
            if token is None:
                return

    def update_batch(self, items: Iterable[tuple[Any, Any]], flags: int = BPF_ANY) -> int:
        """Write many elements with one BPF_MAP_UPDATE_BATCH; returns how many."""
        pairs = list(items)
        if not pairs:
            return 0
        keys = b"".join(self._key.pack(k) for k, _ in pairs)
        values = b"".join(self._encode(v) for _, v in pairs)
        return _sys.map_update_batch(self.fd, keys, values, len(pairs), flags)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete many keys with one BPF_MAP_DELETE_BATCH (hash maps); returns how many.
        A missing key stops the batch with ENOENT, as in the kernel."""
        packed = [self._key.pack(k) for k in keys]
        if not packed:
            return 0
        return _sys.map_delete_batch(self.fd, b"".join(packed), len(packed))


def create_map(spec: MapSpec, key_type: TypeSpec = None, value_type: TypeSpec = None) -> Map:
    """Create a map from ``spec`` (same as :meth:`Map.create`)."""
    return Map.create(spec, key_type, value_type)


def mount_bpffs(path: str = "/sys/fs/bpf") -> bool:
    """Mount a bpffs at ``path`` unless one is there; True if this call mounted it.  Pinning
    needs one; systemd mounts /sys/fs/bpf on most distributions, minimal VMs may not."""
    import ctypes
    import os

    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == [path, "bpf"] for line in f):
            return False
    os.makedirs(path, exist_ok=True)
    libc = _sys.libc()
    if libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise BPFSyscallError(_sys.error_message(f"mount bpffs at {path!r}", err), err)
    return True
