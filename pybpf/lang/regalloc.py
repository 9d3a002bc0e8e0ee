"""Register allocation: virtual registers onto r1-r9, or onto stack slots.

Linear scan (Poletto and Sarkar) over live intervals from a liveness analysis of the
instruction-level control-flow graph.  BPF's calling convention decides the pools: a
helper or bpf-to-bpf call clobbers r1-r5 (and r0), so a value live across a call goes
to one of the callee-saved r6-r9 or, when they are taken, to the stack.  r0 is never
allocated: it is the scratch register of the code generator (and the call result).
A spilled value lives in its own 8-byte stack slot for its whole life; when anything
spills, the allocation is redone without r9, which becomes the second scratch.
"""

from __future__ import annotations

from typing import Optional, Union

from ..asm import R1, R2, R3, R4, R5, R6, R7, R8, R9, Reg
from . import ir

CALLER_SAVED = (R1, R2, R3, R4, R5)
CALLEE_SAVED = (R6, R7, R8, R9)
Location = Union[Reg, ir.FrameObj]


class Allocation:
    def __init__(self, locs: dict[int, Location], scratch2: Optional[Reg]) -> None:
        self.locs = locs
        self.scratch2 = scratch2  # r9 when something spilled


def liveness(insns: list[ir.Insn]) -> tuple[list[int], list[int]]:
    """Live-in and live-out sets (bit masks over vreg ids) of every instruction."""
    n = len(insns)
    labels = {insn.name: i for i, insn in enumerate(insns) if isinstance(insn, ir.Label)}
    use = [0] * n
    kill = [0] * n
    succ: list[tuple[int, ...]] = []
    for i, insn in enumerate(insns):
        for v in insn.uses():
            use[i] |= 1 << v.id
        for v in insn.defs():
            kill[i] |= 1 << v.id
        if isinstance(insn, ir.Jmp):
            succ.append((labels[insn.target],))
        elif isinstance(insn, ir.CJmp):
            succ.append((i + 1, labels[insn.target]) if i + 1 < n else (labels[insn.target],))
        elif insn.ends_block or i + 1 >= n:
            succ.append(())
        else:
            succ.append((i + 1,))
    live_in = [0] * n
    live_out = [0] * n
    changed = True
    while changed:
        changed = False
        for i in range(n - 1, -1, -1):
            out = 0
            for s in succ[i]:
                out |= live_in[s]
            new_in = use[i] | (out & ~kill[i])
            if out != live_out[i] or new_in != live_in[i]:
                live_out[i], live_in[i] = out, new_in
                changed = True
    return live_in, live_out


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def intervals(fn: ir.Function) -> tuple[dict[int, list[int]], set[int]]:
    """``{vreg: [start, end]}`` and the vregs live across a call.  Positions are 2i (the
    inputs of instruction i) and 2i+1 (its outputs): a value last read by an instruction
    and one it writes may share a register (the code generator reads operands first)."""
    insns = fn.insns
    live_in, live_out = liveness(insns)
    spans: dict[int, list[int]] = {}
    crossing: set[int] = set()

    def cover(mask: int, pos: int) -> None:
        for v in _bits(mask):
            span = spans.get(v)
            if span is None:
                spans[v] = [pos, pos]
            elif pos > span[1]:
                span[1] = pos

    for i, insn in enumerate(insns):
        cover(live_in[i], 2 * i)
        out = live_out[i]
        for v in insn.defs():
            out |= 1 << v.id
        cover(out, 2 * i + 1)
        if insn.is_call:
            kill = 0
            for v in insn.defs():
                kill |= 1 << v.id
            crossing.update(_bits(live_out[i] & ~kill))
    return spans, crossing


def allocate(fn: ir.Function) -> Allocation:
    spans, crossing = intervals(fn)
    locs = _scan(fn, spans, crossing, CALLER_SAVED + CALLEE_SAVED, CALLEE_SAVED)
    if any(isinstance(loc, ir.FrameObj) for loc in locs.values()):
        fn.frame = [obj for obj in fn.frame if not obj.name.startswith("spill")]
        locs = _scan(fn, spans, crossing, CALLER_SAVED + CALLEE_SAVED[:-1], CALLEE_SAVED[:-1])
        return Allocation(locs, R9)
    return Allocation(locs, None)


def _scan(fn: ir.Function, spans: dict[int, list[int]], crossing: set[int],
          all_regs: tuple[Reg, ...], saved: tuple[Reg, ...]) -> dict[int, Location]:  # fmt: skip
    locs: dict[int, Location] = {}
    free = list(all_regs)
    active: list[tuple[int, int]] = []  # (end, vreg)
    hints: dict[int, int] = {}  # dst -> src of register moves: same register, no move
    fixed: dict[int, Reg] = {}  # call arguments and parameters: their r1-r5
    for insn in fn.insns:
        if isinstance(insn, ir.Mov) and isinstance(insn.src, ir.VReg):
            hints[insn.dst.id] = insn.src.id
            hints.setdefault(insn.src.id, insn.dst.id)
        elif isinstance(insn, ir.Call):
            for arg, reg in zip(insn.args, CALLER_SAVED):
                if isinstance(arg, ir.VReg):
                    fixed.setdefault(arg.id, reg)
        elif isinstance(insn, ir.Param):
            fixed.setdefault(insn.dst.id, CALLER_SAVED[insn.index])
    for v in sorted(spans, key=lambda v: spans[v][0]):
        start, end = spans[v]
        still = []
        for a_end, a in active:
            if a_end < start:
                free.append(locs[a])  # type: ignore[arg-type]
            else:
                still.append((a_end, a))
        active = still
        pool = saved if v in crossing else all_regs
        hinted = fixed.get(v)
        if hinted is None or hinted not in free or hinted not in pool:
            hinted = locs.get(hints.get(v, -1))
        if hinted is not None and hinted in free and hinted in pool:
            reg = hinted
        else:
            reg = next((r for r in pool if r in free), None)
        if reg is not None:
            free.remove(reg)
            locs[v] = reg
            active.append((end, v))
            continue
        # Nothing free in the pool: spill whichever interval ends last.
        victims = [(a_end, a) for a_end, a in active if locs[a] in pool]
        victim = max(victims, default=None)
        if victim is not None and victim[0] > end:
            locs[v] = locs[victim[1]]
            locs[victim[1]] = fn.frame_obj(8, 8, f"spill{victim[1]}")
            active.remove(victim)
            active.append((end, v))
        else:
            locs[v] = fn.frame_obj(8, 8, f"spill{v}")
    return locs
