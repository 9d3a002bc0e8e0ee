"""Run-queue latency: the enqueue and switch logic shared by runqslower and runqlat.

libbpf-tools carries two copies of ``trace_enqueue`` and of the first half of the
``sched_switch`` handler (runqslower.bpf.c, runqlat.bpf.c); here there is one.  A task is
*enqueued* when it is woken (``sched_wakeup``, ``sched_wakeup_new``) or preempted while still
runnable (``sched_switch`` with ``prev`` in TASK_RUNNING); the time it waited is taken when
``sched_switch`` puts it on the CPU.  Every field offset and width is relocated (CO-RE) from
the target kernel's BTF.

The handlers share one stack frame layout, above ``FRAME_FREE``:

    PID_KEY  u32 pid, the ``start`` map key
    TS       u64 timestamp (and scratch key of per-CPU counters)
    TMP      u64 scratch for BPF_CORE_READ in raw_tp programs
"""

from __future__ import annotations

from pybpf.asm import FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, Asm, Reg
from pybpf.cdecl import Array, FieldRef, Struct, char, long, pid_t, u32
from pybpf.isa import Instruction
from pybpf.object import Globals, MapSpec
from pybpf.uapi import BPF_ANY, BPF_MAP_TYPE_HASH

TASK_COMM_LEN = 16
TASK_RUNNING = 0
MAX_ENTRIES = 10240

# --- local types: only the members we read (the target's BTF has the rest) ---
# struct task_struct { pid_t pid; pid_t tgid; char comm[TASK_COMM_LEN]; }
task_struct = Struct(
    "task_struct", [("pid", pid_t), ("tgid", pid_t), ("comm", Array(char, TASK_COMM_LEN))]
)
# Linux 5.14 renamed task_struct.state to __state and made it unsigned int:
# two flavors of the same struct, told apart by a field-existence relocation.
task_struct___x = Struct("task_struct___x", [("__state", u32)])  # >= 5.14
task_struct___o = Struct("task_struct___o", [("state", long)])  # < 5.14

# Stack frame of the handlers (offsets from the frame pointer r10).
PID_KEY = -4
TS = -16
TMP = -24
FRAME_FREE = TMP  # a tool's own stack slots go below this

# tp_btf context: an array of u64 arguments, in the tracepoint's TP_PROTO order.
# sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
# sched_wakeup(struct task_struct *p), sched_wakeup_new(struct task_struct *p)
CTX_ARG = 8


def start_map() -> MapSpec:
    """struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, u32); __type(value, u64); } start;"""
    return MapSpec("start", BPF_MAP_TYPE_HASH, 4, 8, MAX_ENTRIES)


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


def trace_enqueue(a: Asm, rodata: Globals, done: str) -> None:
    """static int trace_enqueue(u32 tgid, u32 pid), inlined with tgid in r1 and pid in r2;
    ends at label ``done``; clobbers r0-r5.  Filters on the tool's ``targ_tgid`` and
    ``targ_pid`` read-only globals, those it has (runqlat has no ``targ_pid``)."""
    a.jeq(R2, 0, done)  #                          if (!pid) return 0;
    if "targ_tgid" in rodata.variables:
        rodata.load(a, R3, "targ_tgid")  #         if (targ_tgid && targ_tgid != tgid)
        a.jeq(R3, 0, done + "_tgid_ok")
        a.jne(R3, R1, done)  #                         return 0;
        a.label(done + "_tgid_ok")
    if "targ_pid" in rodata.variables:
        rodata.load(a, R3, "targ_pid")  #          if (targ_pid && targ_pid != pid)
        a.jeq(R3, 0, done + "_pid_ok")
        a.jne(R3, R2, done)  #                         return 0;
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


def sched_wakeup(rodata: Globals, raw: bool = False) -> list[Instruction]:
    """SEC("tp_btf/sched_wakeup") int BPF_PROG(sched_wakeup, struct task_struct *p)
    { return trace_enqueue(p->tgid, p->pid); }   (or SEC("raw_tp/sched_wakeup"));
    the same program serves sched_wakeup_new."""
    a = Asm()
    a.ldx(R6, R1, 0 * CTX_ARG, size=8)  # p
    read(a, R7, R6, task_struct.tgid, raw)
    read(a, R2, R6, task_struct.pid, raw)
    a.mov(R1, R7)
    trace_enqueue(a, rodata, "enqueued")
    a.mov(R0, 0).exit()
    return a.assemble()


def switch_start(a: Asm, rodata: Globals, raw: bool, missed: str) -> None:
    """The first half of the sched_switch handler, common to both tools::

        if (get_task_state(prev) == TASK_RUNNING)   /* ivcsw: treat like an enqueue */
            trace_enqueue(BPF_CORE_READ(prev, tgid), BPF_CORE_READ(prev, pid));
        pid = BPF_CORE_READ(next, pid);
        tsp = bpf_map_lookup_elem(&start, &pid);
        if (!tsp) return 0;                         /* missed enqueue: goto ``missed`` */
        delta_ns = bpf_ktime_get_ns() - *tsp;

    With ``ctx`` in r1 on entry; leaves ctx in r6, prev in r7, next in r8, ``delta_ns`` in r9
    and ``pid`` at ``PID_KEY``.  The caller ends with :func:`switch_end`, which deletes the
    ``start`` entry."""
    a.mov(R6, R1)  # ctx
    a.ldx(R7, R6, 1 * CTX_ARG, size=8)  # prev
    a.ldx(R8, R6, 2 * CTX_ARG, size=8)  # next

    get_task_state(a, R1, R7, raw)
    a.jne(R1, TASK_RUNNING, "not_running")
    read(a, R9, R7, task_struct.tgid, raw)
    read(a, R2, R7, task_struct.pid, raw)
    a.mov(R1, R9)
    trace_enqueue(a, rodata, "not_running")

    read(a, R1, R8, task_struct.pid, raw)
    a.stx(FP, PID_KEY, R1, size=4)
    a.ld_map_fd(R1, "start")
    a.mov(R2, FP).add(R2, PID_KEY)
    a.call("map_lookup_elem")
    a.jeq(R0, 0, missed)
    a.ldx(R9, R0, 0, size=8)
    a.call("ktime_get_ns")
    a.sub(R0, R9)
    a.mov(R9, R0)


def increment_counter(a: Asm, map_name: str, key_slot: int, done: str) -> None:
    """``__u32 zero = 0; __u64 *n = bpf_map_lookup_elem(&map, &zero); if (n) (*n)++;``
    then on at label ``done``.  ``map_name`` is a one-element per-CPU array of u64 (no other
    writer: the handlers do not nest on a CPU); ``key_slot`` a free 4-byte stack slot.
    Clobbers r0-r5."""
    a.st(FP, key_slot, 0, size=4)
    a.ld_map_fd(R1, map_name)
    a.mov(R2, FP).add(R2, key_slot)
    a.call("map_lookup_elem")
    a.jeq(R0, 0, done)
    a.ldx(R1, R0, 0, size=8)
    a.add(R1, 1)
    a.stx(R0, 0, R1, size=8)


def switch_end(a: Asm, cleanup: str, out: str) -> None:
    """``cleanup: bpf_map_delete_elem(&start, &pid); out: return 0;``"""
    a.label(cleanup)
    a.ld_map_fd(R1, "start")
    a.mov(R2, FP).add(R2, PID_KEY)
    a.call("map_delete_elem")
    a.label(out)
    a.mov(R0, 0).exit()


# --- user space --------------------------------------------------------------------------


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


def json_comm(raw: bytes, key: str = "comm") -> dict[str, str]:
    """A task name for JSON, losslessly: ``{key: text}`` when the name is valid UTF-8 (JSON
    escapes control characters itself); otherwise the text with U+FFFD for each undecodable
    byte, for people, plus ``{key}_raw``: the exact bytes in hex, for programs
    (``bytes.fromhex(row["comm_raw"])``).  A name is any bytes a task set with
    ``prctl(PR_SET_NAME)``, up to the first NUL."""
    name = raw.split(b"\0", 1)[0]
    try:
        return {key: name.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: name.decode("utf-8", "replace"), f"{key}_raw": name.hex()}


__all__ = [
    "CTX_ARG", "FRAME_FREE", "MAX_ENTRIES", "PID_KEY", "TASK_COMM_LEN", "TASK_RUNNING", "TMP",
    "TS", "get_task_state", "json_comm", "printable_comm", "read", "sched_wakeup", "start_map",
    "switch_end", "switch_start", "task_struct", "task_struct___o", "task_struct___x",
    "increment_counter", "trace_enqueue",
]  # fmt: skip
