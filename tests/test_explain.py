"""`pybpf explain`: every CO-RE relocation, as a table or as JSON with fixed keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BTF_DIR = Path(__file__).resolve().parent.parent / "btf"
KEYS = {"program", "insn", "kind", "type", "field", "access", "local", "target"}


def explain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pybpf", "explain", "runqslower", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_json_against_5_10():
    out = explain("--btf", str(BTF_DIR / "debian-5.10.0-46-amd64.btf.xz"), "--json")
    assert out.returncode == 0, out.stderr
    relos = json.loads(out.stdout)
    assert relos and all(set(r) == KEYS for r in relos)
    assert {r["program"] for r in relos} == {"sched_wakeup", "sched_wakeup_new", "sched_switch"}
    by = {(r["program"], r["type"], r["field"], r["kind"]): r for r in relos}
    exists = by["sched_switch", "task_struct___x", "__state", "field_exists"]
    assert (exists["local"], exists["target"], exists["access"]) == (1, 0, "0:0")
    assert by["sched_switch", "task_struct___x", "__state", "byte_off"]["target"] is None
    assert by["sched_switch", "task_struct___o", "state", "byte_off"]["target"] is not None
    pid = by["sched_wakeup", "task_struct", "pid", "byte_off"]
    assert pid["access"] == "0:0" and pid["local"] == 0 and pid["target"] > 0
    assert all(isinstance(r["insn"], int) for r in relos)


def test_table_against_6_1_rt():
    out = explain("--btf", str(BTF_DIR / "debian-6.1.0-56-rt-amd64.btf.xz"))
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["PROGRAM", "INSN", "KIND", "TYPE", "FIELD", "ACCESS", "LOCAL",
                              "TARGET"]  # fmt: skip
    assert any("task_struct___x" in r and "__state" in r and "byte_off" in r for r in rows)
