"""libbpf itself (Debian's libbpf.so.1 through ctypes) as the oracle of the ELF loader.

Opens an object, loads a chosen set of programs, and returns each program's fd; the
kernel's translated instructions of those programs are what pybpf's must equal.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Iterable, Optional

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    lib.bpf_object__open_file.restype = ctypes.c_void_p
    lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.bpf_object__next_program.restype = ctypes.c_void_p
    lib.bpf_object__next_program.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.bpf_program__name.restype = ctypes.c_char_p
    lib.bpf_program__name.argtypes = [ctypes.c_void_p]
    lib.bpf_program__set_autoload.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.bpf_program__fd.argtypes = [ctypes.c_void_p]
    lib.bpf_object__load.argtypes = [ctypes.c_void_p]
    lib.bpf_object__close.argtypes = [ctypes.c_void_p]
    lib.bpf_object__find_map_by_name.restype = ctypes.c_void_p
    lib.bpf_object__find_map_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.bpf_map__set_max_entries.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.bpf_map__set_value_size.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.libbpf_set_print.restype = ctypes.c_void_p
    lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
    return lib


_LIB: Optional[ctypes.CDLL] = None
_KEEP = None


def available() -> bool:
    return ctypes.util.find_library("bpf") is not None or os.path.exists(
        "/usr/lib/x86_64-linux-gnu/libbpf.so.1")


def lib() -> ctypes.CDLL:
    global _LIB, _KEEP
    if _LIB is None:
        _LIB = _lib()
        _KEEP = _PRINT_FN(lambda level, fmt, args: 0)  # silence libbpf's messages
        _LIB.libbpf_set_print(ctypes.cast(_KEEP, ctypes.c_void_p))
    return _LIB


class _OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts (libbpf 1.x), the fields up to kernel_log_level."""

    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("_removed_attach_prog_fd", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p),
                ("kernel_log_buf", ctypes.c_char_p), ("kernel_log_size", ctypes.c_size_t),
                ("kernel_log_level", ctypes.c_uint32)]  # fmt: skip


class LibbpfObject:
    """An object loaded by libbpf with only ``programs`` set to autoload, and maps resized
    (``sizes``: name -> (max_entries, value_size), 0 keeps the object's)."""

    def __init__(self, path: str, programs: Iterable[str],
                 sizes: Optional[dict[str, tuple[int, int]]] = None,
                 btf_custom_path: Optional[str] = None) -> None:  # fmt: skip
        self.lib = lib()
        opts = None
        if btf_custom_path is not None:  # CO-RE against this BTF instead of the kernel's
            opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts),
                             btf_custom_path=btf_custom_path.encode())
        self.obj = self.lib.bpf_object__open_file(
            path.encode(), ctypes.byref(opts) if opts is not None else None)
        if not self.obj:
            raise OSError(ctypes.get_errno(), f"libbpf cannot open {path}")
        wanted = set(programs)
        self.progs: dict[str, int] = {}
        p = self.lib.bpf_object__next_program(self.obj, None)
        while p:
            name = self.lib.bpf_program__name(p).decode()
            self.lib.bpf_program__set_autoload(p, name in wanted)
            self.progs[name] = p
            p = self.lib.bpf_object__next_program(self.obj, p)
        for name, (max_entries, value_size) in (sizes or {}).items():
            m = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
            if max_entries:
                self.lib.bpf_map__set_max_entries(m, max_entries)
            if value_size:
                self.lib.bpf_map__set_value_size(m, value_size)
        self.error = 0
        err = self.lib.bpf_object__load(self.obj)
        if err:
            self.error = -err

    def fd(self, name: str) -> int:
        return self.lib.bpf_program__fd(self.progs[name])

    def close(self) -> None:
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None

    def __enter__(self) -> LibbpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
