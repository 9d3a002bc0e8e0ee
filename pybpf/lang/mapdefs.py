"""Maps and read-only globals as a program declares them, at module level.

::

    start = HashMap(u32, u64, 10240)         # BPF_MAP_TYPE_HASH
    counts = PerCPUArray(u64, 1)            # key: u32 index
    events = RingBuf(1 << 20)

    class opts(ReadOnly):                   # const volatile globals, frozen .rodata
        min_us: u64

The objects are plain data; the compiler reads them when a BPF function names them
(the module-level name becomes the map's name).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from .. import uapi
from ..cdecl import CType
from ..object import Globals, MapSpec
from .errors import CompileError
from .types import IntType, LangType, resolve_type, u32


class MapDecl:
    map_type = 0
    hash_like = False  # lookups may miss: m[k] += 1 inserts
    percpu = False

    def __init__(self, key: Any, value: Any, max_entries: int, *, flags: int = 0,
                 name: str = "") -> None:  # fmt: skip
        self.key = _type(key, "key")
        self.value = _type(value, "value")
        self.max_entries, self.flags, self.name = max_entries, flags, name

    def spec(self) -> MapSpec:
        key: Optional[CType] = self.key.ctype if self.key is not None else None
        value: Optional[CType] = self.value.ctype if self.value is not None else None
        return MapSpec(self.name, self.map_type, self.key.size if self.key else 0,
                       self.value.size if self.value else 0, self.max_entries, self.flags,
                       key_type=key, value_type=value)  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or '?'})"


def _type(t: Any, what: str) -> Optional[LangType]:
    if t is None:
        return None
    lt = resolve_type(t)
    if lt is None:
        raise CompileError(f"map {what} type {t!r} is not a BPF type")
    return lt


class HashMap(MapDecl):
    map_type = uapi.BPF_MAP_TYPE_HASH
    hash_like = True


class LruHashMap(HashMap):
    map_type = uapi.BPF_MAP_TYPE_LRU_HASH


class PerCPUHashMap(HashMap):
    map_type = uapi.BPF_MAP_TYPE_PERCPU_HASH
    percpu = True


class ArrayMap(MapDecl):
    map_type = uapi.BPF_MAP_TYPE_ARRAY

    def __init__(self, value: Any, max_entries: int, **kw: Any) -> None:
        super().__init__(u32, value, max_entries, **kw)


class PerCPUArray(ArrayMap):
    map_type = uapi.BPF_MAP_TYPE_PERCPU_ARRAY
    percpu = True


class RingBuf(MapDecl):
    """A BPF ring buffer (Linux 5.8) of ``size`` bytes (a power-of-two number of pages)."""

    map_type = uapi.BPF_MAP_TYPE_RINGBUF

    def __init__(self, size: int, **kw: Any) -> None:
        super().__init__(None, None, size, **kw)


class PerfEventArray(MapDecl):
    """Per-CPU perf buffers (sized by the loader: one slot per possible CPU)."""

    map_type = uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY

    def __init__(self, **kw: Any) -> None:
        super().__init__(u32, u32, 0, **kw)


class ReadOnly:
    """Base of read-only globals (``const volatile`` in C): set from user space before
    loading, then frozen; the verifier sees them as constants and drops dead branches."""

    _vars: dict[str, LangType]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        namespace = sys._getframe(1).f_globals
        cls._vars = {}
        for name, ann in cls.__dict__.get("__annotations__", {}).items():
            t = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307
            lt = resolve_type(t)
            if lt is None or not (isinstance(lt, IntType) or lt.name.startswith(("char[", "u8["))):
                raise CompileError(f"read-only global {name}: integers and char arrays only")
            cls._vars[name] = lt

    @classmethod
    def globals(cls) -> Globals:
        return Globals([(n, t.ctype) for n, t in cls._vars.items()])
