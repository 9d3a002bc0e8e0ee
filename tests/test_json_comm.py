"""Task names in JSON are lossless: valid UTF-8 as is, anything else also as exact hex.

A process names its two threads with ``prctl(PR_SET_NAME)``: one with bytes that are not
UTF-8, one with non-ASCII UTF-8.  The threads take turns on one CPU, so each waits for the
other; runqslower and runqlat must give back exactly the bytes the kernel holds in
``/proc/<pid>/task/<tid>/comm``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_rq import Children, PybpfProcess

from pybpf.programs._runq import json_comm

INVALID = b"rq\xff\xfe-\xc3(x"  # 0xff, 0xfe never occur in UTF-8; 0xc3 0x28 is truncated
VALID = "rq-é✓\x1b".encode()  # non-ASCII and a control character, valid UTF-8

NAMED_THREADS = """\
import ctypes, os, sys, threading, time
os.sched_setaffinity(0, {int(sys.argv[1])})
prctl = ctypes.CDLL(None).prctl
tids = {}
def work(name):
    prctl(15, ctypes.c_char_p(bytes.fromhex(name)), 0, 0, 0)  # PR_SET_NAME: this thread
    tids[name] = threading.get_native_id()
    while len(tids) < 2:
        time.sleep(0.001)
    while True:
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        time.sleep(0.0003)
threading.Thread(target=work, args=(sys.argv[3],), daemon=True).start()
threading.Thread(target=work, args=(sys.argv[2],), daemon=True).start()
while len(tids) < 2:
    time.sleep(0.001)
sys.stdout.write(f"{os.getpid()} {tids[sys.argv[2]]} {tids[sys.argv[3]]}\\n")
sys.stdout.flush()
while True:
    time.sleep(1)
"""


def test_json_comm_encoding() -> None:
    assert json_comm(b"bash\0\0\0") == {"comm": "bash"}
    assert json_comm(VALID + b"\0junk") == {"comm": VALID.decode()}
    assert json_comm(INVALID, "prev_comm") == {
        "prev_comm": INVALID.decode("utf-8", "replace"),
        "prev_comm_raw": INVALID.hex(),
    }


def _named_threads(kids: Children) -> tuple[subprocess.Popen, int, int, int]:
    cpu = max(os.sched_getaffinity(0))
    p = kids.add(subprocess.Popen(
        [sys.executable, "-S", "-c", NAMED_THREADS, str(cpu), INVALID.hex(), VALID.hex()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    ))  # fmt: skip
    tgid, bad, good = (int(x) for x in p.stdout.readline().split())
    assert tgid == p.pid
    # the oracle: the kernel's own copy of each name
    assert Path(f"/proc/{tgid}/task/{bad}/comm").read_bytes() == INVALID + b"\n"
    assert Path(f"/proc/{tgid}/task/{good}/comm").read_bytes() == VALID + b"\n"
    p.send_signal(signal.SIGSTOP)  # until the tracers are attached
    return p, tgid, bad, good


def _name(row: dict, key: str) -> bytes:
    """The exact bytes, as a reader of the documented encoding recovers them."""
    raw = row.get(f"{key}_raw")
    return bytes.fromhex(raw) if raw is not None else row[key].encode()


@pytest.mark.kernel
def test_names_round_trip_through_json(need_root: None, tmp_path: Path) -> None:
    with Children() as kids:
        victim, tgid, bad, good = _named_threads(kids)
        main_name = Path(f"/proc/{tgid}/comm").read_bytes()[:-1]
        slower = PybpfProcess(["run", "runqslower", "--json", "-P", "-p", str(tgid), "0"],
                              tmp_path, "slower")  # fmt: skip
        lat = PybpfProcess(["run", "runqlat", "--json", "-L", "-p", str(tgid)], tmp_path, "lat")
        kids.add(slower.proc)
        kids.add(lat.proc)
        slower.wait_for("Tracing run queue latency", in_stderr=True)
        lat.wait_for("Tracing run queue latency", in_stderr=True)
        time.sleep(0.3)
        victim.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        victim.send_signal(signal.SIGSTOP)
        assert slower.stop() == 0, slower.err()
        assert lat.stop() == 0, lat.err()

    names = {bad: INVALID, good: VALID, tgid: main_name}
    rows = [json.loads(line) for line in slower.out().splitlines()]
    assert {bad, good} <= {r["tid"] for r in rows} <= set(names), rows[:5]
    for r in rows:
        assert _name(r, "comm") == names[r["tid"]], r
        assert ("comm_raw" in r) == (r["tid"] == bad), r
        if r["prev_tid"] in names:
            assert _name(r, "prev_comm") == names[r["prev_tid"]], r
    assert {r["prev_tid"] for r in rows} & {bad, good}, "no switch between the two threads"
    bad_row = next(r for r in rows if r["tid"] == bad)
    assert bad_row["comm"] == INVALID.decode("utf-8", "replace")

    hists = {h["tid"]: h for h in map(json.loads, lat.out().splitlines())}
    assert {bad, good} <= set(hists) <= set(names), hists.keys()
    for tid, h in hists.items():
        assert _name(h, "comm") == names[tid], h
    assert "comm_raw" not in hists[good]
