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

from pybpf.asm import FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, Asm, Reg
from pybpf.cdecl import Array, FieldRef, Struct, char, long, pid_t, u32, u64
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool
from pybpf.uapi import (
    BPF_ANY,
    BPF_F_CURRENT_CPU,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    BPF_MAP_TYPE_RINGBUF,
)

TASK_COMM_LEN = 16
TASK_RUNNING = 0
MAX_ENTRIES = 10240
DEFAULT_MIN_US = 10000
TRANSPORTS = ("ringbuf", "perf")
ATTACH_KINDS = ("tp_btf", "raw_tp")
# BPF ring buffer size (a power-of-two number of pages).  Low thresholds report nearly every
# switch: 16 MiB hold ~300,000 events, seconds of backlog while the reader is starved by the
# traced load.  From the default 10 ms up, events are rare and 1 MiB will do: the reader maps
# the ring, and every mapped page counts in its RSS.
RINGBUF_SIZE = 16 << 20
RINGBUF_SIZE_RARE = 1 << 20


def ringbuf_size(min_us: int) -> int:
    return RINGBUF_SIZE if min_us < DEFAULT_MIN_US else RINGBUF_SIZE_RARE
# bpf_ringbuf_output() flags and bpf_ringbuf_query() flags (include/uapi/linux/bpf.h, 5.8).
BPF_RB_NO_WAKEUP = 1 << 0
BPF_RB_FORCE_WAKEUP = 1 << 1
BPF_RB_AVAIL_DATA = 0

# --- local types: only the members we read (the target's BTF has the rest) ---
# struct task_struct { pid_t pid; pid_t tgid; char comm[TASK_COMM_LEN]; }
task_struct = Struct(
    "task_struct", [("pid", pid_t), ("tgid", pid_t), ("comm", Array(char, TASK_COMM_LEN))]
)
# Linux 5.14 renamed task_struct.state to __state and made it unsigned int:
# two flavors of the same struct, told apart by a field-existence relocation.
task_struct___x = Struct("task_struct___x", [("__state", u32)])  # >= 5.14
task_struct___o = Struct("task_struct___o", [("state", long)])  # < 5.14

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

# Stack frame of the handlers (offsets from the frame pointer r10).
PID_KEY = -4  # u32 pid (the `start` map key)
TS = -16  # u64 ts
EVENT = -16 - event.size  # struct event
TMP = EVENT - 8  # u64 scratch for BPF_CORE_READ in raw_tp programs

# tp_btf context: an array of u64 arguments, in the tracepoint's TP_PROTO order.
# sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
# sched_wakeup(struct task_struct *p), sched_wakeup_new(struct task_struct *p)
CTX_ARG = 8


def trace_enqueue(a: Asm, done: str) -> None:
    """static int trace_enqueue(u32 tgid, u32 pid), inlined with tgid in r1 and
    pid in r2; ends at label ``done``; clobbers r0-r5."""
    a.jeq(R2, 0, done)  #                          if (!pid) return 0;
    rodata.load(a, R3, "targ_tgid")  #             if (targ_tgid && targ_tgid != tgid)
    a.jeq(R3, 0, done + "_tgid_ok")
    a.jne(R3, R1, done)  #                             return 0;
    a.label(done + "_tgid_ok")
    rodata.load(a, R3, "targ_pid")  #              if (targ_pid && targ_pid != pid)
    a.jeq(R3, 0, done + "_pid_ok")
    a.jne(R3, R2, done)  #                             return 0;
    a.label(done + "_pid_ok")
    a.stx(FP, PID_KEY, R2, size=4)
    a.call("ktime_get_ns")  #                      ts = bpf_ktime_get_ns();
    a.stx(FP, TS, R0, size=8)
    a.ld_map_fd(R1, "start")  #                    bpf_map_update_elem(&start, &pid, &ts, 0);
    a.mov(R2, FP).add(R2, PID_KEY)
    a.mov(R3, FP).add(R3, TS)
    a.mov(R4, BPF_ANY)
    a.call("map_update_elem")
    a.label(done)


def read(a: Asm, dst: Reg, task: Reg, field: FieldRef, raw: bool) -> None:
    """``dst = task->field``.  tp_btf arguments are typed pointers the verifier lets us load
    through; raw_tp arguments are plain numbers, so, as libbpf-tools' raw_tp programs do with
    BPF_CORE_READ, copy the field with bpf_probe_read_kernel (its size relocated too: state
    is 8 bytes before 5.14) into a zeroed slot.  Clobbers r1-r5 when ``raw``."""
    if not raw:
        a.ldx_core(dst, task, field)
        return
    a.st(FP, TMP, 0, size=8)
    a.mov(R1, FP).add(R1, TMP)
    a.field_size(R2, field)
    a.mov(R3, task).add_offsetof(R3, field)
    a.call("probe_read_kernel")
    a.ldx(dst, FP, TMP, size=8)


def sched_wakeup(raw: bool = False) -> list[Instruction]:
    """SEC("tp_btf/sched_wakeup") int BPF_PROG(sched_wakeup, struct task_struct *p)
    { return trace_enqueue(p->tgid, p->pid); }   (or SEC("raw_tp/sched_wakeup"))"""
    a = Asm()
    a.ldx(R6, R1, 0 * CTX_ARG, size=8)  # p
    read(a, R7, R6, task_struct.tgid, raw)
    read(a, R2, R6, task_struct.pid, raw)
    a.mov(R1, R7)
    trace_enqueue(a, "enqueued")
    a.mov(R0, 0).exit()
    return a.assemble()


def get_task_state(a: Asm, dst: Reg, task: Reg, raw: bool = False) -> None:
    """core_fixes.bpf.h's get_task_state(): __state (>= 5.14) or state (< 5.14),
    each loaded with the width the target kernel gives it."""
    a.field_exists(dst, task_struct___x.__state)  # if (bpf_core_field_exists(t->__state))
    a.jeq(dst, 0, "state_old")
    read(a, dst, task, task_struct___x.__state, raw)  #     return t->__state;
    a.ja("state_done")
    a.label("state_old")
    read(a, dst, task, task_struct___o.state, raw)  # return ((struct task_struct___o *)t)->state;
    a.label("state_done")


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
    a.mov(R6, R1)  # ctx
    a.ldx(R7, R6, 1 * CTX_ARG, size=8)  # prev
    a.ldx(R8, R6, 2 * CTX_ARG, size=8)  # next

    # /* ivcsw: treat like an enqueue event and store timestamp */
    # if (get_task_state(prev) == TASK_RUNNING)
    #     trace_enqueue(BPF_CORE_READ(prev, tgid), BPF_CORE_READ(prev, pid));
    get_task_state(a, R1, R7, raw)
    a.jne(R1, TASK_RUNNING, "not_running")
    read(a, R9, R7, task_struct.tgid, raw)
    read(a, R2, R7, task_struct.pid, raw)
    a.mov(R1, R9)
    trace_enqueue(a, "not_running")

    # pid = BPF_CORE_READ(next, pid);
    read(a, R1, R8, task_struct.pid, raw)
    a.stx(FP, PID_KEY, R1, size=4)
    # /* fetch timestamp and calculate delta */
    # tsp = bpf_map_lookup_elem(&start, &pid);
    # if (!tsp) return 0;   /* missed enqueue */
    a.ld_map_fd(R1, "start")
    a.mov(R2, FP).add(R2, PID_KEY)
    a.call("map_lookup_elem")
    a.jeq(R0, 0, "out")
    a.ldx(R9, R0, 0, size=8)
    # delta_us = (bpf_ktime_get_ns() - *tsp) / 1000;
    a.call("ktime_get_ns")
    a.sub(R0, R9).div(R0, 1000)
    a.mov(R9, R0)
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
    a.jeq(R0, 0, "sent")
    a.st(FP, TS, 0, size=4)
    a.ld_map_fd(R1, "lost")
    a.mov(R2, FP).add(R2, TS)
    a.call("map_lookup_elem")
    a.jeq(R0, 0, "sent")
    a.ldx(R1, R0, 0, size=8)
    a.add(R1, 1)
    a.stx(R0, 0, R1, size=8)  # a per-CPU slot: no other writer
    a.label("sent")

    # bpf_map_delete_elem(&start, &pid);
    a.ld_map_fd(R1, "start")
    a.mov(R2, FP).add(R2, PID_KEY)
    a.call("map_delete_elem")
    a.label("out")
    a.mov(R0, 0).exit()
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
    wakeup = sched_wakeup(raw)
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
            MapSpec("start", BPF_MAP_TYPE_HASH, 4, 8, MAX_ENTRIES),
            events,
            MapSpec("lost", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1),  # failed outputs per CPU
        ],
        rodata=rodata,
    )


# --- user space (runqslower.c) ------------------------------------------------
_EVENT = struct.Struct(f"<{TASK_COMM_LEN}s{TASK_COMM_LEN}sQii")
assert _EVENT.size == event.size


def _comm(raw: bytes) -> str:
    """A task name as text, for JSON (json.dumps escapes control characters)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _escape_char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if c == "\\":
        return "\\\\"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable_comm(raw: bytes) -> str:
    """A task name safe for a terminal: any process can name itself (``prctl(PR_SET_NAME)``)
    with escape sequences such as ``\\x1b[2J``, so control and other non-printable
    characters, undecodable bytes and the backslash itself are shown as ``\\xNN`` escapes."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in text)


def _non_negative(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _pid(text: str) -> int:
    value = _non_negative(text)
    if not 0 < value < 1 << 31:
        raise argparse.ArgumentTypeError(f"invalid PID: {text!r}")
    return value


class RunqSlower(Tool):
    name = "runqslower"
    description = "Trace high run queue latency (like libbpf-tools' runqslower)."
    events_map = "events"
    lost_map = "lost"  # per-CPU count of failed outputs (the ring buffer reports no losses)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "min_us_pos", nargs="?", type=_non_negative, metavar="min_us",
            help=f"minimum run queue latency to trace, in us (default {DEFAULT_MIN_US}; "
            "0: every event)",
        )  # fmt: skip
        parser.add_argument("--min-us", type=_non_negative, metavar="N", help="same as min_us")
        parser.add_argument("-p", "--pid", type=_pid, help="process ID (tgid) to trace")
        parser.add_argument("-t", "--tid", type=_pid, help="thread ID to trace")
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
        ts = time.strftime("%H:%M:%S")
        unpack = _EVENT.unpack_from
        args = self.args
        cache = self._names
        if len(cache) > 4096:
            cache.clear()
        lines = []
        append = lines.append
        if args.json:
            dumps = json.dumps
            for data in records:
                task, prev_task, delta_us, pid, prev_pid = unpack(data)
                comm = cache.get(task)
                if comm is None:
                    comm = cache[task] = dumps(_comm(task))
                if args.previous:
                    prev = cache.get(prev_task)
                    if prev is None:
                        prev = cache[prev_task] = dumps(_comm(prev_task))
                    append(
                        f'{{"time": "{ts}", "comm": {comm}, "tid": {pid}, "lat_us": {delta_us}, '
                        f'"prev_comm": {prev}, "prev_tid": {prev_pid}}}\n'
                    )
                else:
                    append(
                        f'{{"time": "{ts}", "comm": {comm}, "tid": {pid}, "lat_us": {delta_us}}}\n'
                    )
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


TOOL = RunqSlower()
