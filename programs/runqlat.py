"""runqlat: summarize run-queue (scheduler) latency as a log2 histogram.

The BPF side follows libbpf-tools' ``runqlat.bpf.c`` (the C is quoted in the comments); the
enqueue and switch logic is the one runqslower uses (``_runq``), not a copy.  The user side
matches ``runqlat.c``: ``[interval] [count]``, ``-T``, ``-m``, ``-P``, ``-L``, ``--pidnss``,
``-p PID`` and the classic ASCII histogram; ``--json`` adds one JSON object per histogram.

Two extensions of ``struct hist``: the slots are u64 (a u32 slot of a busy CPU wraps within
hours, and ``pybpf export`` serves these counts as never-reset Prometheus counters), and
``total_ns`` sums the latencies, for a histogram's ``_sum`` and checks against schedstat.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from typing import Any, Optional, TextIO

from pybpf.asm import FP, R0, R1, R2, R3, R4, R7, R8, R9, Asm, Reg
from pybpf.cdecl import Array, Ptr, Struct, bool_, char, pid_t, s32, u32, u64
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec, ObjectSpec, ProgramSpec
from pybpf.tool import Tool, pid_arg, plural, positive
from pybpf.uapi import BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_NOEXIST

from ._bits import log2l
from ._runq import (
    FRAME_FREE,
    MAX_ENTRIES,
    PID_KEY,
    TASK_COMM_LEN,
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

MAX_SLOTS = 26  # runqlat.h: slot 25 holds everything from 2^25 us (33 s) up
ATTACH_KINDS = ("tp_btf", "raw_tp")
FOREVER = 99999999  # runqlat.c's default interval and count

# --- types ---
# struct hist { __u64 slots[MAX_SLOTS]; char comm[TASK_COMM_LEN]; __u64 total_ns; };
hist = Struct(
    "hist",
    [
        ("slots", Array(u64, MAX_SLOTS)),
        ("comm", Array(char, TASK_COMM_LEN)),
        ("total_ns", u64),
    ],
)
# For pid_namespace(): task->thread_pid->numbers[level].ns->ns.inum (only what we read).
ns_common = Struct("ns_common", [("inum", u32)])
pid_namespace = Struct("pid_namespace", [("ns", ns_common)])
upid = Struct("upid", [("nr", s32), ("ns", Ptr(pid_namespace))])
pid = Struct("pid", [("level", u32), ("numbers", Array(upid, 1))])
task_struct___pidns = Struct("task_struct___pidns", [("thread_pid", Ptr(pid))])

# const volatile bool targ_per_process, targ_per_thread, targ_per_pidns, targ_ms;
# const volatile pid_t targ_tgid;   static struct hist zero;
rodata = Globals(
    [
        ("targ_per_process", bool_),
        ("targ_per_thread", bool_),
        ("targ_per_pidns", bool_),
        ("targ_ms", bool_),
        ("targ_tgid", pid_t),
        ("zero", hist),
    ]
)

HKEY = FRAME_FREE - 4  # u32 hkey


def pid_namespace_inum(a: Asm, dst: Reg, task: Reg) -> None:
    """static unsigned int pid_namespace(struct task_struct *task):

        pid = BPF_CORE_READ(task, thread_pid);
        level = BPF_CORE_READ(pid, level);
        bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]);
        return BPF_CORE_READ(upid.ns, ns.inum);

    Every read goes through bpf_probe_read_kernel, as BPF_CORE_READ does: ``numbers`` is
    indexed by a run-time value.  Clobbers r1-r5; ``dst`` must be another register."""
    read(a, dst, task, task_struct___pidns.thread_pid, raw=True)  # pid (struct pid *)
    read(a, R4, dst, pid.level, raw=True)  # level
    # &pid->numbers[level] == (void *)pid + offsetof(numbers) + level * sizeof(struct upid)
    a.type_size(R2, upid)
    a.mul(R4, R2).add(R4, dst)
    a.add_offsetof(R4, pid.numbers)
    read(a, dst, R4, upid.ns, raw=True)  # upid.ns (struct pid_namespace *)
    read(a, dst, dst, pid_namespace.ns.inum, raw=True)


def latency_slot(
    a: Asm, dst: Reg, delta: Reg, upper_inclusive: bool, unit_ns: Optional[int] = None
) -> None:
    """``dst`` = the histogram slot of ``delta`` ns (clobbered, as r2)::

        if (targ_ms) delta /= 1000000U; else delta /= 1000U;
        slot = log2l(delta);
        if (slot >= MAX_SLOTS) slot = MAX_SLOTS - 1;

    ``unit_ns`` fixes the unit instead of reading ``targ_ms`` (tests run this alone)."""
    if upper_inclusive:  # delta = delta ? delta - 1 : 0;
        a.jeq(delta, 0, "scale")
        a.sub(delta, 1)
        a.label("scale")
    if unit_ns is not None:
        a.div(delta, unit_ns)
    else:
        rodata.load(a, R1, "targ_ms")
        a.jeq(R1, 0, "in_us")
        a.div(delta, 1000000)
        a.ja("scaled")
        a.label("in_us")
        a.div(delta, 1000)
        a.label("scaled")
    log2l(a, dst, delta, R2)
    a.jlt(dst, MAX_SLOTS, "slot_ok")
    a.mov(dst, MAX_SLOTS - 1)
    a.label("slot_ok")


def sched_switch(raw: bool = False, upper_inclusive: bool = False) -> list[Instruction]:
    """SEC("tp_btf/sched_switch") int BPF_PROG(sched_switch, bool preempt,
    struct task_struct *prev, struct task_struct *next) { return handle_switch(...); }

    ``upper_inclusive``: slot k holds latencies in (2^k, 2^(k+1)] us instead of runqlat's
    [2^k, 2^(k+1)), so that a Prometheus bucket ``le="2^(k+1) us"`` (``le``: less than or
    equal) counts exactly what it says.  The two differ only at exact microsecond
    boundaries: 1 ns of the delta (``pybpf export`` builds with it; ``pybpf run`` does not)."""
    a = Asm()
    # (prev is not used after the enqueue: r7 is free below.)
    switch_start(a, rodata, raw, missed="out")  # ctx r6, prev r7, next r8, delta_ns r9
    a.jslt(R9, 0, "cleanup")  # if (delta < 0) goto cleanup;

    # if (targ_per_process) hkey = BPF_CORE_READ(next, tgid);
    # else if (targ_per_thread) hkey = pid;
    # else if (targ_per_pidns) hkey = pid_namespace(next);
    # else hkey = -1;
    # (frozen .rodata: the verifier keeps only the branch that is taken)
    rodata.load(a, R1, "targ_per_process")
    a.jeq(R1, 0, "not_per_process")
    read(a, R7, R8, task_struct.tgid, raw)
    a.ja("have_key")
    a.label("not_per_process")
    rodata.load(a, R1, "targ_per_thread")
    a.jeq(R1, 0, "not_per_thread")
    a.ldx(R7, FP, PID_KEY, size=4)
    a.ja("have_key")
    a.label("not_per_thread")
    rodata.load(a, R1, "targ_per_pidns")
    a.jeq(R1, 0, "not_per_pidns")
    pid_namespace_inum(a, R7, R8)
    a.ja("have_key")
    a.label("not_per_pidns")
    a.mov32(R7, -1)
    a.label("have_key")
    a.stx(FP, HKEY, R7, size=4)

    # histp = bpf_map_lookup_elem(&hists, &hkey);
    a.ld_map_fd(R1, "hists")
    a.mov(R2, FP).add(R2, HKEY)
    a.call("map_lookup_elem")
    a.jne(R0, 0, "have_hist")
    # if (!histp) {
    #     bpf_map_update_elem(&hists, &hkey, &zero, BPF_NOEXIST);
    a.ld_map_fd(R1, "hists")
    a.mov(R2, FP).add(R2, HKEY)
    rodata.address(a, R3, "zero")
    a.mov(R4, BPF_NOEXIST)
    a.call("map_update_elem")
    #     histp = bpf_map_lookup_elem(&hists, &hkey);
    a.ld_map_fd(R1, "hists")
    a.mov(R2, FP).add(R2, HKEY)
    a.call("map_lookup_elem")
    #     if (!histp) { (*dropped)++; goto cleanup; }   /* the map is full */
    a.jne(R0, 0, "created")
    increment_counter(a, "dropped", HKEY, done="cleanup")
    a.ja("cleanup")
    a.label("created")
    #     BPF_CORE_READ_STR_INTO(&histp->comm, next, comm);
    a.mov(R7, R0)
    a.mov(R1, R7).add(R1, hist.comm.offset)
    a.mov(R2, TASK_COMM_LEN)
    a.mov(R3, R8).add_offsetof(R3, task_struct.comm)
    a.call("probe_read_kernel_str")
    a.mov(R0, R7)
    # }
    a.label("have_hist")
    a.mov(R7, R0)
    # __sync_fetch_and_add(&histp->total_ns, delta);
    a.atomic_add(R7, hist.total_ns.offset, R9)

    latency_slot(a, R1, R9, upper_inclusive)  # slot = log2l(delta / unit), clamped
    # __sync_fetch_and_add(&histp->slots[slot], 1);
    a.lsh(R1, 3).add(R1, R7)
    a.mov(R2, 1)
    a.atomic_add(R1, hist.slots.offset, R2)

    switch_end(a, cleanup="cleanup", out="out")  # bpf_map_delete_elem(&start, &pid);
    return a.assemble()


def build_object(
    attach: str = "tp_btf", upper_inclusive: bool = False, max_keys: int = MAX_ENTRIES
) -> ObjectSpec:
    """The object with ``"tp_btf"`` (Linux 5.5) or ``"raw_tp"`` (4.17) programs, and room
    for ``max_keys`` histograms (waits of keys beyond are counted in ``dropped``)."""
    if attach not in ATTACH_KINDS:
        raise ValueError(f"attach must be one of {ATTACH_KINDS}, got {attach!r}")
    raw = attach == "raw_tp"
    wakeup = sched_wakeup(rodata, raw)
    return ObjectSpec(
        "runqlat",
        programs=[
            ProgramSpec("sched_wakeup", f"{attach}/sched_wakeup", wakeup),
            ProgramSpec("sched_wakeup_new", f"{attach}/sched_wakeup_new", wakeup),
            ProgramSpec(
                "sched_switch", f"{attach}/sched_switch", sched_switch(raw, upper_inclusive)
            ),
        ],
        maps=[
            start_map(),
            MapSpec("hists", BPF_MAP_TYPE_HASH, 4, hist.size, max_keys, value_type=hist),
            MapSpec("dropped", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1),  # waits of no histogram
        ],
        rodata=rodata,
    )


# --- user space (runqlat.c, trace_helpers.c) ---------------------------------------------
_HIST = struct.Struct(f"<{MAX_SLOTS}Q{TASK_COMM_LEN}sQ")
assert _HIST.size == hist.size
_KEY = struct.Struct("<I")


def slot_bounds(slot: int) -> tuple[int, int]:
    """The (low, high) values of a log2 slot as print_log2_hist prints them: 0 -> 1, 2 -> 3,
    4 -> 7, ..."""
    low, high = (1 << (slot + 1)) >> 1, (1 << (slot + 1)) - 1
    return (low - 1 if low == high else low), high


def format_log2_hist(vals: list[int], val_type: str) -> str:
    """trace_helpers.c's print_log2_hist(), as text ("" when every slot is 0)."""
    idx_max = max((i for i, v in enumerate(vals) if v > 0), default=-1)
    if idx_max < 0:
        return ""
    val_max = max(vals)
    narrow = idx_max <= 32
    lines = [
        f"{'':{5 if narrow else 15}}{val_type:<{19 if narrow else 29}} : count    distribution"
    ]
    stars_max = 40 if narrow else 20
    width = 10 if narrow else 20
    for i in range(idx_max + 1):
        low, high = slot_bounds(i)
        val = vals[i]
        stars = min(val, val_max) * stars_max // val_max
        bar = "*" * stars + " " * (stars_max - stars) + ("+" if val > val_max else "")
        lines.append(f"{low:>{width}} -> {high:<{width}} : {val:<8} |{bar}|")
    return "\n".join(lines) + "\n"


def read_dropped(dropped: Any) -> int:
    """Waits that found no histogram (the map was full), summed over CPUs."""
    return sum(dropped.typed("I", "Q").get(0, []))


def read_hists(hists: Any, *, clear: bool) -> list[tuple[int, bytes, list[int], int]]:
    """Every histogram as (key, comm, slots, total_ns), by key; ``clear`` deletes them as
    they are read (runqlat's interval semantics) with one batch syscall per chunk."""
    rows = []
    for key, value in hists.lookup_batch(delete=clear):
        fields = _HIST.unpack(value)
        rows.append((_KEY.unpack(key)[0], fields[MAX_SLOTS], list(fields[:MAX_SLOTS]),
                     fields[MAX_SLOTS + 1]))  # fmt: skip
    rows.sort()
    return rows


class RunqLat(Tool):
    name = "runqlat"
    description = "Summarize run queue latency as a histogram (like libbpf-tools' runqlat)."

    def __init__(self) -> None:
        self.args: Optional[argparse.Namespace] = None
        self.remaining = FOREVER
        self.exported: Optional[Exported] = None
        self.dropped = 0

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_filter_arguments(parser)
        parser.add_argument("interval", nargs="?", type=positive, default=None,
                            help="seconds between summaries (default: one at Ctrl-C)")  # fmt: skip
        parser.add_argument("count", nargs="?", type=positive, default=FOREVER,
                            help="number of summaries")  # fmt: skip
        parser.add_argument("-T", "--timestamp", action="store_true",
                            help="include a timestamp on output")  # fmt: skip
        parser.add_argument("-m", "--milliseconds", action="store_true",
                            help="millisecond histogram")  # fmt: skip
        parser.add_argument("--json", action="store_true",
                            help="one JSON object per histogram, not ASCII art")  # fmt: skip

    def check_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Options that would change nothing are refused rather than ignored."""
        keyed = key_label(args)
        if getattr(args, "max_keys", None) is not None and not keyed:
            parser.error("--max-keys sizes the histograms of -P, -L or --pidnss: give one "
                         "of them (without, there is one histogram)")  # fmt: skip
        if getattr(args, "export", False):
            if args.max_series is not None and not keyed:
                parser.error("--max-series caps the series of -P, -L or --pidnss: give one "
                             "of them (without, there is one histogram)")  # fmt: skip
            if args.max_series is None:
                args.max_series = DEFAULT_MAX_SERIES
        elif getattr(args, "timestamp", False) and getattr(args, "json", False):
            parser.error("-T prints a time line above each text histogram; JSON rows always "
                         "carry their time: use one of -T and --json")  # fmt: skip

    def build(self, args: argparse.Namespace) -> ObjectSpec:
        # Exported buckets are "less than or equal" to their upper edge (see sched_switch).
        return build_object(
            choose_attach(args),
            upper_inclusive=getattr(args, "export", False),
            max_keys=getattr(args, "max_keys", None) or MAX_ENTRIES,
        )

    def rodata(self, args: argparse.Namespace) -> dict:
        return rodata_values(args, milliseconds=getattr(args, "milliseconds", False))

    # -- pybpf export runqlat ------------------------------------------------------------
    exportable = True

    def add_export_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_filter_arguments(parser)
        parser.add_argument(
            "--max-series", type=positive, default=None, metavar="N",
            help="with -P, -L or --pidnss: at most N labelled histograms; keys seen once "
            f"N are taken go into one labelled \"other\" (default {DEFAULT_MAX_SERIES})",
        )  # fmt: skip

    def collect(self, obj: Any, args: argparse.Namespace) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily

        state = self._export_state(args)
        dropped = CounterMetricFamily(
            "run_queue_latency_dropped", "Waits measured but in no histogram: the "
            "histogram map was full (see --max-keys).", value=read_dropped(obj.maps["dropped"]),
        )  # fmt: skip
        return [state.collect(obj.maps["hists"]), dropped]

    def _export_state(self, args: argparse.Namespace) -> Exported:
        if self.exported is None:
            self.exported = Exported(key_label(args), args.max_series)
        return self.exported

    def header(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.remaining = args.count
        tracing = "Tracing run queue latency... Hit Ctrl-C to end.\n"
        if args.json:
            sys.stderr.write(tracing)  # stdout stays pure JSON lines
            sys.stderr.flush()
            return
        out.write(tracing)

    def interval(self, args: argparse.Namespace) -> Optional[float]:
        return float(args.interval or FOREVER)

    def on_interval(self, obj: Any, out: TextIO) -> bool:
        self.print_hists(obj, out)
        self.remaining -= 1
        return self.remaining > 0

    def on_stop(self, obj: Any, out: TextIO) -> None:
        self.print_hists(obj, out)

    def print_hists(self, obj: Any, out: TextIO) -> None:
        """runqlat.c's print_log2_hists(): every histogram, then clear them; and how many
        waits found the histogram map full, on stderr."""
        args = self.args
        assert args is not None
        hists = obj.maps["hists"]
        dropped = read_dropped(obj.maps["dropped"])
        if dropped > self.dropped:
            sys.stderr.write(
                f"Dropped {plural(dropped - self.dropped, 'wait')}: no room for more than "
                f"{plural(hists.spec.max_entries, 'histogram')} (--max-keys)\n"
            )
            sys.stderr.flush()
            self.dropped = dropped
        units = "msecs" if args.milliseconds else "usecs"
        label = key_label(args)
        now_ns = time.time_ns()  # JSON "ts": when the histograms were read
        ts = time.strftime("%H:%M:%S", time.localtime(now_ns // 1_000_000_000))
        rows = read_hists(hists, clear=True)
        if args.json:
            for key, comm, slots, total_ns in rows:
                record: dict[str, Any] = {"time": ts, "ts": now_ns, "unit": units}
                if label:
                    record[label] = key
                    record.update(json_comm(comm))
                last = max((i for i, v in enumerate(slots) if v), default=-1)
                record["count"] = sum(slots)
                record["total_ns"] = total_ns
                record["hist"] = [
                    {"low": slot_bounds(i)[0], "high": slot_bounds(i)[1], "count": slots[i]}
                    for i in range(last + 1)
                ]
                out.write(json.dumps(record) + "\n")
            return
        text = ["\n"]
        if args.timestamp:
            text.append(f"{ts:<8}\n")
        for key, comm, slots, _ in rows:
            if label:
                text.append(f"\n{label} = {key} {printable_comm(comm)}\n")
            text.append(format_log2_hist(slots, units))
        out.write("".join(text))


# --- pybpf export runqlat: Prometheus histograms -----------------------------------------
METRIC = "run_queue_latency_seconds"
HELP = "Time tasks waited on a CPU run queue before they ran (runqlat's log2 histogram)."
DEFAULT_MAX_SERIES = 100
OTHER = "other"


def bucket_edges() -> list[float]:
    """The ``le`` of slots 0..MAX_SLOTS-2, in seconds: slot k holds (2^k, 2^(k+1)] us (the
    export build, ``upper_inclusive``), so its cumulative bucket is ``le`` = 2^(k+1) us.
    The last slot also holds everything clamped into it: it is only in ``+Inf``."""
    return [(1 << (k + 1)) / 1e6 for k in range(MAX_SLOTS - 1)]


def cumulative_buckets(slots: list[int]) -> list[tuple[str, float]]:
    from prometheus_client.utils import floatToGoString

    buckets, total = [], 0
    for edge, count in zip(bucket_edges(), slots):
        total += count
        buckets.append((floatToGoString(edge), float(total)))
    buckets.append(("+Inf", float(sum(slots))))
    return buckets


class Exported:
    """The histograms of one exporter: monotonic counters, capped in number.

    A scrape reads the map without clearing it (Prometheus counters never reset).  With keys
    (-P, -L, --pidnss), the first ``max_series`` keys get their own labelled histogram; keys
    seen after that are summed into one histogram labelled ``other`` for good, so that no
    series ever decreases.  Keys of tasks that have exited (pid/tid keys) are deleted from
    the map, so that it never fills up: an "other" key's counts are then kept here; a
    labelled key's series simply ends."""

    def __init__(self, label: str, max_series: int) -> None:
        self.label, self.max_series = label, max_series
        self.labelled: set[int] = set()
        self.other_keys: set[int] = set()
        self.retired_slots = [0] * MAX_SLOTS
        self.retired_ns = 0

    def collect(self, hists: Any) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        rows = read_hists(hists, clear=False)
        labels = [self.label, "comm"] if self.label else []
        family = HistogramMetricFamily(METRIC, HELP, labels=labels)
        if not self.label:
            for _, _, slots, total_ns in rows:
                family.add_metric([], cumulative_buckets(slots), total_ns / 1e9)
            return family
        gone = self._exited({key for key, *_ in rows}) if self.label != "pidns" else set()
        other_slots, other_ns = list(self.retired_slots), self.retired_ns
        for key, comm, slots, total_ns in rows:
            if key not in self.labelled and key not in self.other_keys:
                if len(self.labelled) < self.max_series:
                    self.labelled.add(key)
                else:
                    self.other_keys.add(key)
            if key in self.labelled:
                name = printable_comm(comm)
                family.add_metric([str(key), name], cumulative_buckets(slots), total_ns / 1e9)
                continue
            other_slots = [a + b for a, b in zip(other_slots, slots)]
            other_ns += total_ns
            if key in gone:  # its counts stay in "other", kept here from now on
                self.retired_slots = [a + b for a, b in zip(self.retired_slots, slots)]
                self.retired_ns += total_ns
        if gone:
            hists.delete_batch(_KEY.pack(key) for key in sorted(gone))
            self.labelled -= gone
            self.other_keys -= gone
        if self.other_keys or any(other_slots):
            family.add_metric([OTHER, OTHER], cumulative_buckets(other_slots), other_ns / 1e9)
        return family

    def _exited(self, keys: set[int]) -> set[int]:
        return {key for key in keys if not os.path.exists(f"/proc/{key}")}


# --- shared by `pybpf run runqlat` and `pybpf export runqlat` -----------------------------


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--pid", type=pid_arg, help="trace this PID (process) only")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("-P", "--pids", action="store_true",
                      help="a histogram per process ID")  # fmt: skip
    keys.add_argument("-L", "--tids", action="store_true",
                      help="a histogram per thread ID")  # fmt: skip
    keys.add_argument("--pidnss", action="store_true",
                      help="a histogram per PID namespace")  # fmt: skip
    parser.add_argument(
        "--max-keys", type=positive, default=None, metavar="N",
        help=f"with -P, -L or --pidnss: room for N histograms in the kernel (default "
        f"{MAX_ENTRIES}); waits of further keys are counted as dropped",
    )  # fmt: skip
    parser.add_argument(
        "--attach", choices=("auto",) + ATTACH_KINDS, default="auto",
        help="tracepoint programs: tp_btf (Linux 5.5) or raw_tp (4.17); auto: tp_btf when "
        "the kernel loads it",
    )  # fmt: skip


def choose_attach(args: argparse.Namespace) -> str:
    """tp_btf where the kernel has it (probed only when the runner is about to load)."""
    attach = getattr(args, "attach", "auto")
    if attach == "auto" and getattr(args, "probe_kernel", False):
        from pybpf import probes  # a bpf() call: only when loading

        attach = "tp_btf" if probes.have_tp_btf(getattr(args, "target_btf", None)) else "raw_tp"
    attach = "tp_btf" if attach == "auto" else attach
    args.attach = attach
    return attach


def rodata_values(args: argparse.Namespace, *, milliseconds: bool) -> dict:
    return {
        "targ_per_process": bool(args.pids),
        "targ_per_thread": bool(args.tids),
        "targ_per_pidns": bool(args.pidnss),
        "targ_ms": milliseconds,
        "targ_tgid": args.pid or 0,
    }


def key_label(args: argparse.Namespace) -> str:
    """What a histogram's key is: "pid", "tid", "pidns", or "" (one histogram)."""
    return "pid" if args.pids else "tid" if args.tids else "pidns" if args.pidnss else ""


TOOL = RunqLat()
