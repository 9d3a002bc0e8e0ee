"""Names a BPF function can call that are not helpers: the compiler knows them."""

from __future__ import annotations

from typing import Any


class Builtin:
    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    def __call__(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError(f"{self.name}() is usable inside BPF functions only")

    def __repr__(self) -> str:
        return f"<BPF builtin {self.name}>"


sizeof = Builtin("sizeof", "sizeof(x): the size in bytes of a type or of a place.")
field_exists = Builtin(
    "field_exists", "field_exists(p.field): 1 if the target kernel has the field (CO-RE).")
cast = Builtin("cast", "cast(p, T): the kernel pointer p as a pointer to kernel struct T.")
unroll = Builtin("unroll", "for i in unroll(N): the body repeated N times, i a constant.")
kernel_struct = Builtin("kernel_struct", "kernel_struct('name'): a kernel struct type by name.")


class _Helpers:
    """``bpf.ktime_get_ns()``: a BPF helper by name (its number comes from the target's
    BTF at load time)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Builtin(name, f"the BPF helper bpf_{name}()")


bpf = _Helpers()

# Return types of helpers whose result is not a ``long`` (include/uapi/linux/bpf.h).
HELPER_RESULTS = {
    "ktime_get_ns": "u64", "ktime_get_boot_ns": "u64", "ktime_get_coarse_ns": "u64",
    "ktime_get_tai_ns": "u64", "get_current_pid_tgid": "u64", "get_current_uid_gid": "u64",
    "get_current_task": "u64", "get_current_cgroup_id": "u64", "jiffies64": "u64",
    "get_smp_processor_id": "u32", "get_prandom_u32": "u32", "get_numa_node_id": "s64",
    "ringbuf_query": "u64",
}  # fmt: skip
