"""BPF maps from user space: create, read, write, iterate, freeze.

Keys and values are raw ``bytes`` of the map's key and value sizes: the layout belongs to
the caller (``struct.pack``), as with libbpf's ``bpf_map_*_elem``.  Per-CPU maps read and
write one 8-byte-aligned slot per *possible* CPU, concatenated, as the kernel does.
"""

from __future__ import annotations

from typing import Iterator, Optional

from . import syscall as _sys
from .errors import PyBPFError
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


class Map:
    """A live BPF map owning its fd; closing the last fd (and no program using it) frees it."""

    def __init__(self, spec: MapSpec, fd: _sys.FD) -> None:
        self.spec = spec
        self._fd = fd
        self._value_buf_size = spec.value_size
        if spec.map_type in _PERCPU_TYPES:
            # Per-CPU values are copied as one 8-byte-aligned slot per possible CPU.
            slot = (spec.value_size + 7) & ~7
            self._value_buf_size = slot * len(_sys.possible_cpus())

    @classmethod
    def create(cls, spec: MapSpec) -> Map:
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
        return cls(spec, fd)

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open an existing map by id (BPF_MAP_GET_FD_BY_ID) with a spec read back from it."""
        fd = _sys.map_get_fd_by_id(map_id)
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
        return cls(spec, fd)

    # -- fd ownership -------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        return self._fd.fileno()

    def fileno(self) -> int:
        return self._fd.fileno()

    def close(self) -> None:
        self._fd.close()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


def create_map(spec: MapSpec) -> Map:
    """Create a map from ``spec`` (same as :meth:`Map.create`)."""
    return Map.create(spec)
