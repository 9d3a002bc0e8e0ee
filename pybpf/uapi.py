"""Stable UAPI constants of ``include/uapi/linux/bpf.h`` (pure, no syscalls).

These are ABI: the same on every kernel, so they are not "kernel-specific
values" the way struct offsets or helper numbers from BTF are.  Names are
the kernel's, so they can be searched.
"""

from __future__ import annotations

# enum bpf_prog_type
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_PERF_EVENT = 7
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26

# enum bpf_attach_type
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25

# enum bpf_map_type
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_TASK_STORAGE = 29
BPF_MAP_TYPE_RINGBUF = 27

# map_flags
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10

# flags of bpf_perf_event_output
BPF_F_CURRENT_CPU = 0xFFFFFFFF

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
