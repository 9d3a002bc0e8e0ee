"""Open a compiled ``.bpf.o``, set its globals, load it with CO-RE, attach it, close it.

The Python side of a libbpf skeleton for objects built elsewhere (clang, a CI job, a
distribution package)::

    with BPFObject.open("runqslower.bpf.o") as obj:
        obj.set("min_us", 1000)          # const volatile: before load
        obj.load()                       # CO-RE against /sys/kernel/btf/vmlinux
        obj.attach()                     # every program, by its section name
        for key, value in obj.maps["start"].typed_items(): ...

Parsing and relocation are pure (:mod:`pybpf.elf`, :func:`pybpf.object.prepare`); this
module adds what depends on the running system: the kernel's BTF, its Kconfig and
version for ``.kconfig`` externs, and the syscalls (:mod:`pybpf.loader`).
"""

from __future__ import annotations

import gzip
import os
from typing import Any, Iterable, Optional, Union

from .btf import BTF, BTF_KIND_ENUM
from .elf import ElfObject, internal_map_name, open_file, parse_object
from .elf.parse import Extern, kernel_version_code, object_name
from .elf.values import BTFCodec, encode
from .errors import PyBPFError
from .loader import LoadedObject, attach_all
from .maps import Map
from .object import PreparedObject, prepare
from .syscall import FD

_ATTACHABLE = ("tp_btf", "raw_tp", "raw_tracepoint", "tracepoint", "tp", "fentry", "fexit",
               "kprobe", "kretprobe")  # fmt: skip
_SIZED = {4: "I", 8: "Q"}  # keys and values declared by size only (__uint(key_size, 4))


class BPFObject:
    """One compiled object: programs, maps and globals, before and after load."""

    def __init__(self, elf: ElfObject) -> None:
        self.elf = elf
        self.name = elf.name
        self._values: dict[str, bytes] = {}
        self.autoload = dict(elf.autoload)
        self.prepared: Optional[PreparedObject] = None
        self.loaded: Optional[LoadedObject] = None
        self.maps: dict[str, Map] = {}
        self.programs: dict[str, FD] = {}

    @classmethod
    def open(cls, path: str) -> BPFObject:
        return cls(open_file(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "object") -> BPFObject:
        return cls(parse_object(data, object_name(name)))

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach and free everything this object loaded (idempotent)."""
        if self.loaded is not None:
            self.loaded.close()
        self.maps = {}
        self.programs = {}

    # -- before load ----------------------------------------------------------------------------
    @property
    def btf(self) -> BTF:
        if self.elf.btf is None:
            raise PyBPFError(f"{self.name}: the object has no BTF")
        return self.elf.btf

    def set(self, name: str, value: Any) -> None:
        """Set a global variable's initial value (``const volatile`` ones: before load)."""
        var = self.elf.variables.get(name)
        if var is None:
            known = ", ".join(sorted(self.elf.variables)) or "none"
            raise PyBPFError(f"{self.name}: no global variable {name!r} (globals: {known})")
        if self.loaded is not None:
            raise PyBPFError(f"{name}: globals are set before load()")
        raw = encode(self.btf, var.type_id, value)
        if len(raw) != var.size:
            raise PyBPFError(f"{name}: {len(raw)} bytes for a {var.size}-byte variable")
        self._values[name] = raw

    def resize(self, name: str, *, max_entries: Optional[int] = None,
               value_size: Optional[int] = None) -> None:  # fmt: skip
        """Before load, as libbpf's ``bpf_map__set_max_entries``/``_set_value_size``: tools
        size some maps at run time (a stack map's value is its depth times 8)."""
        if self.loaded is not None:
            raise PyBPFError(f"map {name}: maps are resized before load()")
        spec = self.elf.spec
        for i, m in enumerate(spec.maps):
            if m.name == name:
                changes: dict[str, Any] = {}
                if max_entries is not None:
                    changes["max_entries"] = max_entries
                if value_size is not None:
                    changes["value_size"] = value_size
                    changes["btf_value_type_id"] = 0  # the declared type no longer fits
                spec.maps[i] = m._replace(**changes)
                return
        raise PyBPFError(f"{self.name}: no map {name!r}")

    def get(self, name: str) -> Any:
        """A global's value as set (or its default from the object)."""
        var = self.elf.variables[name]
        if name in self._values:
            raw = self._values[name]
        else:
            initial = self.elf.map_spec(var.map).initial or b""
            raw = initial[var.offset : var.offset + var.size]
        return BTFCodec(self.btf, var.type_id).unpack(raw)

    # -- load -------------------------------------------------------------------------------------
    def prepare(self, target: Optional[BTF] = None, programs: Optional[Iterable[str]] = None,
                *, attach_ids: bool = True,
                attach_target: Optional[BTF] = None) -> PreparedObject:  # fmt: skip
        """Relocate for ``target`` (default: the running kernel): pure, no syscall.

        ``attach_ids=False`` skips the attach targets' BTF ids (``explain`` and ``dump``
        show programs whose traced function this kernel lacks)."""
        spec = self.elf.spec
        wanted = set(programs) if programs is not None else {
            n for n, on in self.autoload.items() if on}
        if target is None:
            target = BTF.kernel() if self._needs_kernel_btf(wanted, attach_ids) else _no_btf()
        unknown = wanted - {p.name for p in spec.programs}
        if unknown:
            raise PyBPFError(f"{self.name}: no program {', '.join(sorted(unknown))}")
        maps = []
        for m in spec.maps:
            if m.initial is not None:
                initial = bytearray(m.initial)
                for name, raw in self._values.items():
                    var = self.elf.variables[name]
                    if var.map == m.name:
                        initial[var.offset : var.offset + var.size] = raw
                if m.name == self.elf.kconfig_map:
                    initial = bytearray(kconfig_data(self.elf.externs, len(initial), target))
                m = m._replace(initial=bytes(initial))
            maps.append(m)
        progs = [p if attach_ids else p._replace(attach_btf=False)
                 for p in spec.programs if p.name in wanted]  # fmt: skip
        spec = spec._replace(programs=progs, maps=maps)
        self.prepared = prepare(spec, target, attach_target=attach_target)
        return self.prepared

    def _needs_kernel_btf(self, programs: set[str], attach_ids: bool) -> bool:
        """As libbpf: the kernel's BTF is read only for CO-RE records, BTF attach targets
        and the externs it answers (an object without them loads without reading 5 MB)."""
        for p in self.elf.spec.programs:
            if p.name in programs and (p.core_relos or (attach_ids and p.attach_btf)):
                return True
        return any(e.name == "LINUX_HAS_BPF_COOKIE" for e in self.elf.externs)

    def load(self, target: Optional[BTF] = None,
             programs: Optional[Iterable[str]] = None) -> BPFObject:  # fmt: skip
        """Create the maps and load the programs (those with autoload, or ``programs``).

        ``target``: the BTF that CO-RE relocates against (default: the running kernel's);
        attach ids always come from the running kernel, as with libbpf's
        ``btf_custom_path``."""
        if self.loaded is not None:
            raise PyBPFError(f"{self.name}: already loaded")
        attach_target = None
        if target is not None and any(p.attach_btf for p in self.elf.spec.programs):
            attach_target = BTF.kernel()
        prepared = self.prepare(target, programs, attach_target=attach_target)
        loaded = LoadedObject(prepared)
        try:
            loaded.load()
        except BaseException:
            loaded.close()
            raise
        self.loaded = loaded
        self.programs = loaded.programs
        for name, m in loaded.maps.items():
            spec = next(s for s in prepared.spec.maps if s.name == name)
            if self.elf.btf is not None:
                key: Any = BTFCodec(self.btf, spec.btf_key_type_id) if spec.btf_key_type_id \
                    else _SIZED.get(spec.key_size)
                value: Any = BTFCodec(self.btf, spec.btf_value_type_id) \
                    if spec.btf_value_type_id else _SIZED.get(spec.value_size)
                m.typed(key, value)
            self.maps[name] = m
        return self

    def map(self, name: str) -> Map:
        """A map by its name, or a global-data map by its section (``.rodata``, ``.bss``)."""
        if name in self.maps:
            return self.maps[name]
        for var_map in {v.map for v in self.elf.variables.values() if v.section == name}:
            return self.maps[var_map]
        internal = internal_map_name(self.name, name)
        if name.startswith(".") and internal in self.maps:  # .kconfig, data without variables
            return self.maps[internal]
        raise PyBPFError(f"{self.name}: no map {name!r} (maps: {', '.join(self.maps)})")

    # -- attach -----------------------------------------------------------------------------------
    def attach(self) -> None:
        """Attach every loaded program by its section name (libbpf's auto-attach)."""
        if self.loaded is None:
            raise PyBPFError(f"{self.name}: load() before attach()")
        for prog in self.loaded.prepared.programs:
            kind = prog.section.lstrip("?").split("/", 1)[0].split(".", 1)[0]
            if kind not in _ATTACHABLE or (kind not in ("tp_btf",) and "/" not in prog.section):
                raise PyBPFError(f"program {prog.name}: section {prog.section!r} cannot be "
                                 f"attached automatically (attach kinds: {', '.join(_ATTACHABLE)})")
            self.loaded.links.extend(attach_all(prog, self.programs[prog.name]))


def _no_btf() -> BTF:
    """An empty BTF: the target of objects that consult none (no CO-RE, no attach ids)."""
    import struct

    return BTF.from_bytes(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0")


# --------------------------------------------------------------------------- .kconfig
def kernel_config() -> dict[str, str]:
    """The running kernel's Kconfig: /proc/config.gz, else /boot/config-$(uname -r)."""
    paths = ["/proc/config.gz", f"/boot/config-{os.uname().release}"]
    for path in paths:
        try:
            opener: Any = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                out = {}
                for line in f:
                    if line.startswith("CONFIG_") and "=" in line:
                        k, v = line.rstrip("\n").split("=", 1)
                        out[k] = v
                return out
        except OSError:
            continue
    raise PyBPFError("kernel config not found (/proc/config.gz, /boot/config-*): needed by "
                     "the object's CONFIG_ externs")  # fmt: skip


def _kconfig_value(ext: Extern, config: dict[str, str]) -> Union[int, bytes]:
    raw = config.get(ext.name)
    if raw is None:
        if not ext.weak:
            raise PyBPFError(f"extern {ext.name}: not in the kernel config (and not __weak)")
        return 0
    if raw in ("y", "m", "n"):
        return {"y": 1, "m": 2, "n": 0}[raw] if ext.size == 1 else int(raw == "y")
    if raw.startswith('"'):
        return raw.strip('"').encode()
    return int(raw, 0)


def kconfig_data(externs: list[Extern], size: int, target: BTF) -> bytes:
    """The ``.kconfig`` map's value, as libbpf fills it: LINUX_KERNEL_VERSION from the
    running kernel's release, LINUX_HAS_BPF_COOKIE from the kernel's helpers (5.15),
    LINUX_HAS_SYSCALL_WRAPPER from kallsyms, CONFIG_* from its Kconfig."""
    buf = bytearray(size)
    config: Optional[dict[str, str]] = None
    for ext in externs:
        if ext.kind != "kconfig":
            continue
        value: Union[int, bytes]
        if ext.name == "LINUX_KERNEL_VERSION":
            value = linux_kernel_version()
        elif ext.name == "LINUX_HAS_BPF_COOKIE":
            value = int(_has_helper(target, "BPF_FUNC_get_attach_cookie"))
        elif ext.name == "LINUX_HAS_SYSCALL_WRAPPER":
            value = int(_kallsyms_has("__x64_sys_bpf") or _kallsyms_has("__arm64_sys_bpf"))
        elif ext.name.startswith("CONFIG_"):
            if config is None:
                config = kernel_config()
            value = _kconfig_value(ext, config)
        elif ext.name.startswith("LINUX_") and ext.weak:
            value = 0
        else:
            raise PyBPFError(f"extern {ext.name}: unknown virtual .kconfig extern")
        if isinstance(value, bytes):
            raw = value[: ext.size - 1].ljust(ext.size, b"\0")
        else:
            raw = (value & ((1 << (8 * ext.size)) - 1)).to_bytes(ext.size, "little")
        buf[ext.offset : ext.offset + ext.size] = raw
    return bytes(buf)


def linux_kernel_version() -> int:
    """libbpf's ``get_kernel_version``: Ubuntu's /proc/version_signature, Debian's version
    string (``#1 SMP Debian 4.19.260-1``), else the release (``6.18.44``)."""
    try:
        with open("/proc/version_signature") as f:
            code = kernel_version_code(f.read().split()[2])
            if code:
                return code
    except (OSError, IndexError):
        pass
    uts = os.uname()
    if "Debian " in uts.version:
        code = kernel_version_code(uts.version.split("Debian ", 1)[1])
        if code:
            return code
    return kernel_version_code(uts.release)


def _has_helper(btf: BTF, name: str) -> bool:
    ids = btf.find("bpf_func_id", BTF_KIND_ENUM)
    return bool(ids) and any(v.name == name for v in btf.type(ids[0]).values)


def _kallsyms_has(name: str) -> bool:
    try:
        with open("/proc/kallsyms") as f:
            return any(line.rstrip("\n").split(" ")[2:3] == [name] for line in f)
    except OSError:
        return False
