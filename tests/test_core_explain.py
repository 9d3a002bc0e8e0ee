"""`pybpf explain -v`: the matched target access and every candidate with its fate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BTF_5_10 = Path(__file__).resolve().parent.parent / "btf" / "debian-5.10.0-46-amd64.btf.xz"


def explain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pybpf", "explain", "runqslower", "--btf", str(BTF_5_10), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_verbose_table_says_why_state_is_poisoned_on_5_10():
    out = explain("-v")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "poisoned: [132] struct task_struct has no member '__state'" in text
    assert "candidate [132] struct task_struct: rejected: struct task_struct has no member" in text
    assert "target: [132] STRUCT task_struct.state (0:1 @ offset 16)" in text


def test_verbose_json_has_candidates_and_default_json_keeps_its_keys():
    plain = json.loads(explain("--json").stdout)
    assert all("candidates" not in r for r in plain)
    relos = json.loads(explain("--json", "-v").stdout)
    (state,) = [r for r in relos if r["field"] == "__state" and r["kind"] == "byte_off"]
    assert state["target"] is None and "no member '__state'" in state["reason"]
    (cand,) = state["candidates"]
    assert cand == {"btf": "vmlinux", "id": 132, "name": "task_struct", "kind": "STRUCT",
                    "matched": False, "detail": "struct task_struct has no member '__state'"}
