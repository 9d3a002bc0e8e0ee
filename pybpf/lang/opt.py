"""Clean-ups on the IR before register allocation.

The kernel refuses a program with an instruction no path reaches ("unreachable insn",
checked on the control-flow graph alone), which constant conditions and returns in
both branches of an ``if`` leave behind: they are removed here, with jumps to the next
instruction.
"""

from __future__ import annotations

from . import ir


def successors(insns: list[ir.Insn], labels: dict[str, int], i: int) -> tuple[int, ...]:
    insn = insns[i]
    if isinstance(insn, ir.Jmp):
        return (labels[insn.target],)
    nxt = (i + 1,) if i + 1 < len(insns) else ()
    if isinstance(insn, ir.CJmp):
        return nxt + (labels[insn.target],)
    return () if insn.ends_block else nxt


_PURE = (ir.Mov, ir.Bin, ir.Un, ir.Load, ir.Addr, ir.LdMap, ir.CoreOffset, ir.CoreValue)


def drop_unused(fn: ir.Function) -> None:
    """Remove computations whose result nothing reads (a helper's unused result is not
    copied out of r0).  Loads go too: what a program may read, it may also not read."""
    while True:
        used: set[int] = set()
        for insn in fn.insns:
            used.update(v.id for v in insn.uses())
        out = []
        for insn in fn.insns:
            if isinstance(insn, _PURE) and insn.dst.id not in used:  # type: ignore[attr-defined]
                continue
            if isinstance(insn, ir.Call) and insn.dst is not None and insn.dst.id not in used:
                insn.dst = None
            out.append(insn)
        if len(out) == len(fn.insns):
            return
        fn.insns = out


def simplify(fn: ir.Function) -> None:
    drop_unused(fn)
    while True:
        insns = fn.insns
        labels = {insn.name: i for i, insn in enumerate(insns) if isinstance(insn, ir.Label)}
        seen = [False] * len(insns)
        stack = [0] if insns else []
        while stack:
            i = stack.pop()
            if seen[i]:
                continue
            seen[i] = True
            stack.extend(successors(insns, labels, i))
        kept = [insn for insn, live in zip(insns, seen) if live]
        out: list[ir.Insn] = []
        for i, insn in enumerate(kept):
            if isinstance(insn, (ir.Jmp, ir.CJmp)):
                # a jump to the label right after it (labels between count too)
                j = i + 1
                while j < len(kept) and isinstance(kept[j], ir.Label):
                    if kept[j].name == insn.target:  # type: ignore[attr-defined]
                        break
                    j += 1
                if j < len(kept) and isinstance(kept[j], ir.Label) \
                        and kept[j].name == insn.target:  # type: ignore[attr-defined]
                    if isinstance(insn, ir.Jmp):
                        continue
            out.append(insn)
        if len(out) == len(insns):
            fn.insns = out
            return
        fn.insns = out
