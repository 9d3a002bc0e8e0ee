"""runqlat's --pidnss path relocated against every reference kernel, checked against bpftool.

``task->thread_pid->numbers[level].ns->ns.inum``: five structs whose layouts moved between
5.10 and 6.18 (struct pid grew pidfs members in 6.9; ns_common was reworked in 6.18).  The
relocated offsets and sizes must be bpftool's (``btf dump format raw``), not our parser's.
"""

from __future__ import annotations

import pytest  # noqa: E402
from test_runqslower_relocation import kernel  # noqa: F401  (the per-blob fixture)

from pybpf.object import prepare
from pybpf.programs import runqlat

pytestmark = pytest.mark.oracle("bpftool")


def _targets(prepared, kind: str, type_name: str, field: str) -> set:
    (prog,) = [p for p in prepared.programs if p.name == "sched_switch"]
    return {r.target for r in prog.relocations
            if r.kind == kind and r.type == type_name and r.field == field}  # fmt: skip


def test_pid_namespace_path_matches_bpftool(kernel):  # noqa: F811
    btf, dump, blob = kernel
    prepared = prepare(runqlat.build_object(), btf)
    thread_pid = dump.field("task_struct", "thread_pid")
    assert _targets(prepared, "byte_off", "task_struct___pidns", "thread_pid") == {thread_pid[0]}
    assert _targets(prepared, "byte_sz", "task_struct___pidns", "thread_pid") == {8}
    assert _targets(prepared, "byte_off", "pid", "level") == {dump.field("pid", "level")[0]}
    assert _targets(prepared, "byte_off", "pid", "numbers") == {dump.field("pid", "numbers")[0]}
    assert _targets(prepared, "byte_off", "upid", "ns") == {dump.field("upid", "ns")[0]}
    assert _targets(prepared, "type_size", "upid", "") == {dump.size_of(dump.struct("upid"))}
    inum = dump.field("pid_namespace", "ns")[0] + dump.field("ns_common", "inum")[0]
    assert _targets(prepared, "byte_off", "pid_namespace", "ns.inum") == {inum}, blob
