"""runqslower with its BPF side written in pybpf's Python language (docs/language.md).

The same tool as ``runqslower`` (its user side is reused: flags, header, columns,
JSON), its handlers compiled from the functions below instead of written in
registers.  They read like libbpf-tools' ``runqslower.bpf.c``; every field offset
comes from the target's BTF through CO-RE, and the tracepoints' arguments from
their ``btf_trace_*`` prototypes.  Events go through a BPF ring buffer (Linux 5.8),
tracepoints are tp_btf (5.5).
"""

from __future__ import annotations

import argparse
import mmap
from typing import Any

from pybpf.lang import (
    HashMap,
    KernelStruct,
    PerCPUArray,
    ReadOnly,
    RingBuf,
    Struct,
    cast,
    char,
    field_exists,
    function,
    program,
    s32,
    s64,
    u32,
    u64,
    unroll,
)
from pybpf.lang.program import build
from pybpf.object import ObjectSpec

from .runqslower import DEFAULT_MIN_US, RunqSlower, ringbuf_size

TASK_RUNNING = 0
BPF_RB_NO_WAKEUP = 1  # bpf_ringbuf_output() flags (include/uapi/linux/bpf.h, 5.8)
BPF_RB_FORCE_WAKEUP = 2


class Event(Struct):  # runqslower.h
    task: char[16]
    prev_task: char[16]
    delta_us: u64
    pid: s32
    prev_pid: s32


class opts(ReadOnly):  # noqa: N801 - const volatile globals, as in the C
    min_us: u64
    targ_pid: s32
    targ_tgid: s32
    targ_comm: char[16]
    wakeup_bytes: u64  # wake the reader when the ring holds this much


class task_struct___x(KernelStruct):  # noqa: N801 - Linux >= 5.14
    __state: u32


class task_struct___o(KernelStruct):  # noqa: N801 - Linux < 5.14
    state: s64


start = HashMap(u32, u64, 10240)
events = RingBuf(1 << 20)
lost = PerCPUArray(u64, 1)


@function
def trace_enqueue(tgid: u32, pid: u32) -> s32:
    if not pid:
        return 0
    if opts.targ_tgid and opts.targ_tgid != tgid:
        return 0
    if opts.targ_pid and opts.targ_pid != pid:
        return 0
    start[pid] = ktime_get_ns()  # noqa: F821 - a BPF helper, by name
    return 0


@program("tp_btf/sched_wakeup")
def sched_wakeup(p) -> s32:
    return trace_enqueue(p.tgid, p.pid)


@program("tp_btf/sched_wakeup_new")
def sched_wakeup_new(p) -> s32:
    return trace_enqueue(p.tgid, p.pid)


@program("tp_btf/sched_switch")
def sched_switch(preempt, prev, next) -> s32:
    # ivcsw: treat like an enqueue event and store timestamp
    state: s64 = 0
    if field_exists(task_struct___x.__state):
        state = cast(prev, task_struct___x).__state
    else:
        state = cast(prev, task_struct___o).state
    if state == TASK_RUNNING:
        trace_enqueue(prev.tgid, prev.pid)
    pid = next.pid
    # fetch timestamp and calculate delta
    tsp = start.get(pid)
    if tsp is None:
        return 0  # missed enqueue
    delta_us = (ktime_get_ns() - tsp) // 1000  # noqa: F821
    if opts.min_us and delta_us <= opts.min_us:
        return 0
    for i in unroll(16):  # the verifier knows targ_comm: only its set bytes remain
        c = opts.targ_comm[i]
        if c == 0:
            break
        if next.comm[i] != c:
            return 0
    event = Event(pid=pid, prev_pid=prev.pid, delta_us=delta_us)
    event.task = next.comm
    event.prev_task = prev.comm
    flags = BPF_RB_NO_WAKEUP
    if ringbuf_query(events, 0) > opts.wakeup_bytes:  # noqa: F821
        flags = BPF_RB_FORCE_WAKEUP
    if events.output(event, flags):
        lost[0] += 1
    del start[pid]
    return 0


class RunqSlowerLang(RunqSlower):
    name = "runqslower_lang"
    description = "runqslower, its BPF side written in pybpf's Python language."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(attach="tp_btf", transport="ringbuf")

    def check_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        super().check_arguments(parser, args)
        if args.attach != "tp_btf" or args.transport != "ringbuf":
            parser.error("runqslower_lang: tp_btf programs and a ring buffer only")

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        btf = getattr(args, "target_btf", None)
        if btf is None:
            from pybpf.runner import load_btf

            btf = load_btf(getattr(args, "btf", None))
        min_us = getattr(args, "min_us", None)
        self.ring = ringbuf_size(DEFAULT_MIN_US if min_us is None else min_us)
        events.max_entries = self.ring
        self.perf_buffer_pages = max(64, self.ring // mmap.PAGESIZE // 4)
        programs = [sched_wakeup, sched_wakeup_new, sched_switch]
        return build("runqslower", programs, btf).spec

    def rodata(self, args: argparse.Namespace) -> dict[str, Any]:
        return {**super().rodata(args), "wakeup_bytes": self.ring // 2}


TOOL = RunqSlowerLang()
