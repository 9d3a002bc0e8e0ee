"""runqslower: trace tasks that waited on a run queue longer than a threshold.

The BPF side follows libbpf-tools' ``runqslower.bpf.c`` line by line (the C
is quoted in the comments); the user side matches ``runqslower.c``'s flags,
header and columns.  Every kernel-specific value — the offsets and widths of
``task_struct.pid``, ``.tgid``, ``.comm`` and the task state, helper numbers,
the tracepoints' BTF ids — is computed from the target kernel's BTF at load
time by pybpf's CO-RE engine.
"""

from __future__ import annotations

import argparse
import json
import mmap
import struct
import sys
import time
from typing import TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, Asm
from pybpf.cdecl import Array, Struct, char, pid_t, u64
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool, non_negative, pid_arg
from pybpf.uapi import (
    BPF_F_CURRENT_CPU,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    BPF_MAP_TYPE_RINGBUF,
)

from ._runq import (
    FRAME_FREE,
    PID_KEY,
    TASK_COMM_LEN,
    TS,
    increment_counter,
    json_comm,
    printable_comm,
    read,
    sched_wakeup,
    start_map,
    switch_end,
    switch_start,
    task_struct,
)

DEFAULT_MIN_US = 10000
TRANSPORTS = ("ringbuf", "perf")
ATTACH_KINDS = ("tp_btf", "raw_tp")
# BPF ring buffer size (a power-of-two number of pages).  Low thresholds report nearly every
# switch: 16 MiB hold ~300,000 events, seconds of backlog while the reader is starved by the
# traced load.  From the default 10 ms up, events are rare and 1 MiB will do: the reader maps
# the ring, and every mapped page counts in its RSS.
RINGBUF_SIZE = 16 << 20
RINGBUF_SIZE_RARE = 1 << 20


# bpf_ringbuf_output() flags and bpf_ringbuf_query() flags (include/uapi/linux/bpf.h, 5.8).
BPF_RB_NO_WAKEUP = 1 << 0
BPF_RB_FORCE_WAKEUP = 1 << 1
BPF_RB_AVAIL_DATA = 0


def ringbuf_size(min_us: int) -> int:
    return RINGBUF_SIZE if min_us < DEFAULT_MIN_US else RINGBUF_SIZE_RARE


# --- the event, as runqslower.h ---
# struct event { char task[16]; char prev_task[16]; u64 delta_us; pid_t pid; pid_t prev_pid; }
event = Struct(
    "event",
    [
        ("task", Array(char, TASK_COMM_LEN)),
        ("prev_task", Array(char, TASK_COMM_LEN)),
        ("delta_us", u64),
        ("pid", pid_t),
        ("prev_pid", pid_t),
    ],
)

# const volatile __u64 min_us; const volatile pid_t targ_pid, targ_tgid;
# const volatile char targ_comm[TASK_COMM_LEN];
rodata = Globals(
    [
        ("min_us", u64),
        ("targ_pid", pid_t),
        ("targ_tgid", pid_t),
        ("targ_comm", Array(char, TASK_COMM_LEN)),
    ]
)

# Stack frame of sched_switch below the shared slots (see _runq).
EVENT = FRAME_FREE - event.size  # struct event


def zero_event(a: Asm) -> None:
    """struct event event = {};"""
    for off in range(0, event.size, 8):
        a.st(FP, EVENT + off, 0, size=8)


def read_comms(a: Asm) -> None:
    """bpf_probe_read_kernel_str(&event.task, sizeof(event.task), next->comm);
    bpf_probe_read_kernel_str(&event.prev_task, sizeof(event.prev_task), prev->comm);
    (prev in r7, next in r8)"""
    for field, task in ((event.task, R8), (event.prev_task, R7)):
        a.mov(R1, FP).add(R1, EVENT + field.offset)
        a.mov(R2, field.size)
        a.mov(R3, task).add_offsetof(R3, task_struct.comm)
        a.call("probe_read_kernel_str")


def sched_switch(
    transport: str = "perf", raw: bool = False, ring_size: int = RINGBUF_SIZE
) -> list[Instruction]:
    """SEC("tp_btf/sched_switch")
    int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)

    ``transport`` picks the events map, as ``#ifdef``s would in C: ``"perf"`` outputs
    through the perf event array (libbpf-tools), ``"ringbuf"`` through a BPF ring buffer
    without a wakeup per event.  ``raw``: the SEC("raw_tp/sched_switch") variant (kernels
    without tp_btf), which reads task fields with BPF_CORE_READ."""
    a = Asm()
    switch_start(a, rodata, raw, missed="out")  # ctx r6, prev r7, next r8, delta_ns r9
    # delta_us = (bpf_ktime_get_ns() - *tsp) / 1000;
    a.div(R9, 1000)
    # if (min_us && delta_us <= min_us) return 0;
    rodata.load(a, R1, "min_us")
    a.jeq(R1, 0, "above_min")
    a.jle(R9, R1, "out")
    a.label("above_min")

    # if (targ_comm[0] && strncmp(next->comm, targ_comm, strlen(targ_comm))) return 0;
    # The verifier knows targ_comm (frozen .rodata): it keeps only the bytes that are set.
    if raw:  # next is a plain number: compare the copy made for the event, made first
        zero_event(a)
        read_comms(a)
        a.mov(R2, FP).add(R2, EVENT + event.task.offset)
    else:
        a.mov(R2, R8).add_offsetof(R2, task_struct.comm)
    for i in range(TASK_COMM_LEN):
        a.ld_map_value(R1, Globals.MAP_NAME, rodata.offset("targ_comm") + i)
        a.ldx(R1, R1, 0, size=1)
        a.jeq(R1, 0, "comm_ok")
        a.ldx(R3, R2, i, size=1)
        a.jne(R1, R3, "out")
    a.label("comm_ok")

    if not raw:
        zero_event(a)
    # event.pid = pid; event.prev_pid = BPF_CORE_READ(prev, pid); event.delta_us = delta_us;
    read(a, R1, R7, task_struct.pid, raw)
    a.stx(FP, EVENT + event.prev_pid.offset, R1, size=4)
    a.ldx(R1, FP, PID_KEY, size=4)
    a.stx(FP, EVENT + event.pid.offset, R1, size=4)
    a.stx(FP, EVENT + event.delta_us.offset, R9, size=8)
    if not raw:
        read_comms(a)

    if transport == "ringbuf":
        # /* wake the reader only when half full: it drains on a timer otherwise */
        # flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > ring_size / 2 ?
        #         BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
        a.ld_map_fd(R1, "events")
        a.mov(R2, BPF_RB_AVAIL_DATA)
        a.call("ringbuf_query")
        a.mov(R4, BPF_RB_NO_WAKEUP)
        a.jle(R0, ring_size // 2, "quiet")
        a.mov(R4, BPF_RB_FORCE_WAKEUP)
        a.label("quiet")
        # err = bpf_ringbuf_output(&events, &event, sizeof(event), flags);
        a.ld_map_fd(R1, "events")
        a.mov(R2, FP).add(R2, EVENT)
        a.mov(R3, event.size)
        a.call("ringbuf_output")
    else:
        # err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event));
        a.mov(R1, R6)
        a.ld_map_fd(R2, "events")
        a.mov32(R3, BPF_F_CURRENT_CPU)
        a.mov(R4, FP).add(R4, EVENT)
        a.mov(R5, event.size)
        a.call("perf_event_output")
    # if (err) { __u32 zero = 0; __u64 *n = bpf_map_lookup_elem(&lost, &zero); if (n) (*n)++; }
    a.jeq(R0, 0, "cleanup")
    increment_counter(a, "lost", TS, done="cleanup")

    switch_end(a, cleanup="cleanup", out="out")  # bpf_map_delete_elem(&start, &pid);
    return a.assemble()


def build_object(
    transport: str = "perf", attach: str = "tp_btf", ring_size: int = RINGBUF_SIZE
) -> ObjectSpec:
    """The object for one events transport, ``"perf"`` or ``"ringbuf"`` (Linux 5.8), and one
    kind of tracepoint program, ``"tp_btf"`` (5.5) or ``"raw_tp"`` (4.17)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    if attach not in ATTACH_KINDS:
        raise ValueError(f"attach must be one of {ATTACH_KINDS}, got {attach!r}")
    raw = attach == "raw_tp"
    events = (
        MapSpec("events", BPF_MAP_TYPE_RINGBUF, 0, 0, ring_size)
        if transport == "ringbuf"
        else MapSpec("events", BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0)  # 0: one per CPU
    )
    wakeup = sched_wakeup(rodata, raw)
    return ObjectSpec(
        "runqslower",
        programs=[
            ProgramSpec("sched_wakeup", f"{attach}/sched_wakeup", wakeup),
            ProgramSpec("sched_wakeup_new", f"{attach}/sched_wakeup_new", wakeup),
            ProgramSpec(
                "sched_switch", f"{attach}/sched_switch", sched_switch(transport, raw, ring_size)
            ),
        ],
        maps=[
            start_map(),
            events,
            MapSpec("lost", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1),  # failed outputs per CPU
        ],
        rodata=rodata,
    )


# --- user space (runqslower.c) ------------------------------------------------
_EVENT = struct.Struct(f"<{TASK_COMM_LEN}s{TASK_COMM_LEN}sQii")
assert _EVENT.size == event.size


def _json_comm(raw: bytes, key: str) -> str:
    """The JSON members of a task name (``"comm": ...`` and, when it is not valid UTF-8,
    ``"comm_raw": "<hex>"``), as text to put in a row."""
    return json.dumps(json_comm(raw, key))[1:-1]


class RunqSlower(Tool):
    name = "runqslower"
    description = "Trace high run queue latency (like libbpf-tools' runqslower)."
    events_map = "events"
    lost_map = "lost"  # per-CPU count of failed outputs (the ring buffer reports no losses)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "min_us_pos", nargs="?", type=non_negative, metavar="min_us",
            help=f"minimum run queue latency to trace, in us (default {DEFAULT_MIN_US}; "
            "0: every event)",
        )  # fmt: skip
        parser.add_argument("--min-us", type=non_negative, metavar="N", help="same as min_us")
        parser.add_argument("-p", "--pid", type=pid_arg, help="process ID (tgid) to trace")
        parser.add_argument("-t", "--tid", type=pid_arg, help="thread ID to trace")
        parser.add_argument("-c", "--comm", help="only tasks whose name starts with COMM")
        parser.add_argument(
            "-P", "--previous", action="store_true",
            help="also show the previous task's name and TID",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="one JSON object per event")
        parser.add_argument(
            "--attach", choices=("auto",) + ATTACH_KINDS, default="auto",
            help="tracepoint programs: tp_btf (Linux 5.5, direct field loads) or raw_tp "
            "(4.17); auto: tp_btf when the kernel loads it",
        )  # fmt: skip
        parser.add_argument(
            "--transport", choices=("auto",) + TRANSPORTS, default="auto",
            help="events from the kernel through a BPF ring buffer (Linux 5.8) or per-CPU "
            "perf buffers; auto: the ring buffer when the kernel has it",
        )  # fmt: skip

    def check_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.min_us_pos is not None and args.min_us is not None:
            parser.error("give min_us either as an argument or with --min-us, not both")
        args.min_us = args.min_us if args.min_us is not None else args.min_us_pos
        if args.min_us is None:
            args.min_us = DEFAULT_MIN_US
        if args.min_us >= 1 << 64:
            parser.error("min_us is too large")
        if args.comm is not None:
            raw = args.comm.encode()
            if not raw or len(raw) >= TASK_COMM_LEN or b"\0" in raw:
                parser.error(f"-c COMM must be 1 to {TASK_COMM_LEN - 1} bytes")

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        # The runner sets probe_kernel when it is about to load (not for `pybpf explain`),
        # and target_btf when that BTF is the running kernel's.
        probe = getattr(args, "probe_kernel", False)
        transport = getattr(args, "transport", "auto")
        attach = getattr(args, "attach", "auto")
        if probe and "auto" in (transport, attach):
            from pybpf import probes  # a bpf() call: only when loading

            if transport == "auto":
                transport = "ringbuf" if probes.have_ringbuf() else "perf"
            if attach == "auto":
                target = getattr(args, "target_btf", None)
                attach = "tp_btf" if probes.have_tp_btf(target) else "raw_tp"
        transport = "ringbuf" if transport == "auto" else transport
        attach = "tp_btf" if attach == "auto" else attach
        args.transport, args.attach = transport, attach
        min_us = getattr(args, "min_us", None)
        ring = ringbuf_size(DEFAULT_MIN_US if min_us is None else min_us)
        # perf transport: the same bytes per CPU (libbpf-tools' 64 pages at default)
        self.perf_buffer_pages = max(64, ring // mmap.PAGESIZE // 4)
        return build_object(transport, attach, ring)

    def rodata(self, args: argparse.Namespace) -> dict:
        return {
            "min_us": args.min_us,
            "targ_pid": args.tid or 0,
            "targ_tgid": args.pid or 0,
            "targ_comm": args.comm or "",
        }

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        tracing = f"Tracing run queue latency higher than {args.min_us} us\n"
        if args.json:
            sys.stderr.write(tracing)  # stdout stays pure JSON lines
            sys.stderr.flush()
            return
        out.write(tracing)
        if args.previous:
            out.write(
                f"{'TIME':<8} {'COMM':<16} {'TID':<6} {'LAT(us)':>14} {'PREV COMM':<16} "
                f"{'PREV TID':<6}\n"
            )
        else:
            out.write(f"{'TIME':<8} {'COMM':<16} {'TID':<6} {'LAT(us)':>14}\n")

    def on_event(self, cpu: int, data: bytes, out: TextIO) -> None:
        self.on_events(cpu, [data], out)

    def on_events(self, cpu: int, records: list[bytes], out: TextIO) -> None:
        """A batch of events, written with one ``write``: formatting is cached per task name
        (names repeat), and the time is read once per batch (batches span <= 100 ms)."""
        now_ns = time.time_ns()  # JSON "ts": when the batch was read (the rows are <= ~100 ms old)
        ts = time.strftime("%H:%M:%S", time.localtime(now_ns // 1_000_000_000))
        unpack = _EVENT.unpack_from
        args = self.args
        cache = self._names
        if len(cache) > 4096:
            cache.clear()
        lines = []
        append = lines.append
        if args.json:
            head = f'{{"time": "{ts}", "ts": {now_ns}, '
            prev_cache = self._prev_names
            if len(prev_cache) > 4096:
                prev_cache.clear()
            for data in records:
                task, prev_task, delta_us, pid, prev_pid = unpack(data)
                comm = cache.get(task)
                if comm is None:
                    comm = cache[task] = _json_comm(task, "comm")
                if args.previous:
                    prev = prev_cache.get(prev_task)
                    if prev is None:
                        prev = prev_cache[prev_task] = _json_comm(prev_task, "prev_comm")
                    append(f'{head}{comm}, "tid": {pid}, "lat_us": {delta_us}, {prev}, '
                           f'"prev_tid": {prev_pid}}}\n')
                else:
                    append(f'{head}{comm}, "tid": {pid}, "lat_us": {delta_us}}}\n')
        else:
            for data in records:
                task, prev_task, delta_us, pid, prev_pid = unpack(data)
                comm = cache.get(task)
                if comm is None:
                    comm = cache[task] = printable_comm(task)
                if args.previous:
                    prev = cache.get(prev_task)
                    if prev is None:
                        prev = cache[prev_task] = printable_comm(prev_task)
                    append(f"{ts:<8} {comm:<16} {pid:<6} {delta_us:>14} {prev:<16} {prev_pid:<6}\n")
                else:
                    append(f"{ts:<8} {comm:<16} {pid:<6} {delta_us:>14}\n")
        out.write("".join(lines))

    def __init__(self) -> None:
        self._names: dict[bytes, str] = {}  # raw comm -> formatted (JSON or table) text
        self._prev_names: dict[bytes, str] = {}  # raw comm -> JSON prev_comm members


TOOL = RunqSlower()
