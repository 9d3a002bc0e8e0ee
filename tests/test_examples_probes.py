"""docs/examples/reads_kprobe.py and reads_fentry.py: read(2) calls and bytes per process.

A child stops itself, the example starts, the child is continued and makes exactly N reads
of one byte from /dev/zero (nothing else it does then reads): the example's row for it must
say N calls and N bytes.  On a kernel without the attach kind (what pybpf's probes say) the
example must instead exit with one clear error line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_rq import Children, PybpfProcess, patience, wait_state

from pybpf import probes

pytestmark = pytest.mark.kernel

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
N = 357
CHILD = f"""\
import os, signal, time
os.kill(os.getpid(), signal.SIGSTOP)
fd = os.open("/dev/zero", os.O_RDONLY)
for _ in range({N}):
    os.read(fd, 1)
os.write(1, b"done\\n")
while True:
    time.sleep(1)
"""


def supported(kind: str) -> bool:
    if kind == "kprobe":
        return os.path.exists("/sys/bus/event_source/devices/kprobe/type")
    return probes.have_fentry()


@pytest.mark.parametrize("kind", ["kprobe", "fentry"])
def test_reads_example_counts_exactly(kind: str, tmp_path: Path) -> None:
    example = EXAMPLES / f"reads_{kind}.py"
    if not supported(kind):
        out = subprocess.run([sys.executable, "-m", "pybpf", "run", str(example)],
                             capture_output=True, text=True, timeout=patience(60))  # fmt: skip
        assert out.returncode == 1 and out.stderr.startswith("pybpf: error:"), out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert ("no kprobe PMU" if kind == "kprobe" else "refuses BPF trampolines") in out.stderr
        return
    with Children() as kids:
        child = kids.add(subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE))
        wait_state(child.pid, "T")
        tracer = PybpfProcess(["run", str(example)], tmp_path, kind)
        kids.procs.append(tracer.proc)
        tracer.wait_for("Counting read(2)", timeout=30)
        os.kill(child.pid, signal.SIGCONT)
        assert child.stdout.readline() == b"done\n"
        assert tracer.stop(signal.SIGINT) == 0, tracer.err()
    rows = {int(r.split()[0]): r.split()[1:] for r in tracer.out().splitlines()[2:]}
    assert rows.get(child.pid) == [str(N), str(N)], (child.pid, tracer.out())
