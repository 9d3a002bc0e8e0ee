"""Errors a user can act on: verifier rejections (tail by default, the whole log with -v),
missing kernel BTF (suggests --btf), a kernel feature that is absent."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers_rq import REPO, kernel_ids, tool_env, wait_gone

from pybpf import runner
from pybpf.errors import BTFError

pytestmark = pytest.mark.kernel

REJECTED = """\
from pybpf.asm import R0, R1, Asm
from pybpf.object import ObjectSpec, ProgramSpec
from pybpf.tool import Tool


class Rejected(Tool):
    description = "reads a register never written: the verifier says no"

    def build(self, args):
        a = Asm()
        for _ in range(40):  # a log long enough that the tail is not all of it
            a.mov(R1, 1)
        a.mov(R0, 0)
        a.ldx(R0, R0, 0, size=8)  # a load through a scalar: rejected
        a.exit()
        return ObjectSpec("rejected", [ProgramSpec("rejected", "raw_tp/sys_enter",
                                                   a.assemble())])


TOOL = Rejected()
"""


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pybpf", "run", *args], cwd=REPO, env=tool_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_missing_kernel_btf_suggests_btf_flag(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A kernel without /sys/kernel/btf/vmlinux: say so, and how to go on (--btf)."""
    monkeypatch.setattr(runner, "KERNEL_BTF", str(tmp_path / "vmlinux"))
    with pytest.raises(BTFError, match="--btf FILE") as exc:
        runner.load_btf(None)
    assert "CONFIG_DEBUG_INFO_BTF" in str(exc.value)


@pytest.mark.usefixtures("need_root")
def test_verifier_rejection_tail_and_full_log_with_v(tmp_path) -> None:
    prog = tmp_path / "rejected.py"
    prog.write_text(REJECTED)
    before = kernel_ids()
    short = run([str(prog)])
    assert short.returncode == 1 and "Traceback" not in short.stderr
    first, *tail = short.stderr.splitlines()
    assert first.startswith("pybpf: error: program rejected (raw_tp/sys_enter) rejected by "
                            "the verifier: BPF_PROG_LOAD: Permission denied (EACCES)")  # fmt: skip
    assert "R0 invalid mem access 'scalar'" in first
    assert 0 < len(tail) <= 12 and "--- verifier log ---" not in short.stderr
    full = run([str(prog), "-v"])
    assert full.returncode == 1 and "Traceback" not in full.stderr
    log = full.stderr.split("--- verifier log ---\n", 1)[1].split("--- end ---", 1)[0]
    assert log.splitlines()[0].startswith("0:"), log[:200]  # from the first instruction
    assert len(log.splitlines()) > len(tail) and "R0 invalid mem access" in log
    # a rejected load leaves nothing behind
    new = {k: set(v) - set(before[k]) for k, v in kernel_ids().items()}
    assert not any(wait_gone(new).values())
