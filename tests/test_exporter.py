"""``pybpf export runqlat``: exact bucket edges, exposition, caps, busy scrapes, teardown.

Oracles: the kernel runs the slot computation itself (BPF_PROG_TEST_RUN) for deltas on
every bucket edge; the exposition is parsed by prometheus_client's parser and, in
test_prometheus_e2e.py, scraped by a real Prometheus server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers_rq import (
    REPO,
    Children,
    PybpfProcess,
    assert_gone,
    kernel_ids,
    owned_bpf_ids,
    tool_env,
)

from pybpf.asm import R0, R1, Asm
from pybpf.programs import runqlat

pytestmark = pytest.mark.kernel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter(PybpfProcess):
    """``pybpf export runqlat --listen 127.0.0.1:PORT ARGS``."""

    def __init__(self, args: list[str], tmp_path: Path, port: int = 0) -> None:
        self.port = port or free_port()
        listen = ["--listen", f"127.0.0.1:{self.port}"]
        super().__init__(["export", "runqlat", *listen, *args], tmp_path,
                         f"exporter-{self.port}", stdout=subprocess.DEVNULL)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def wait_ready(self) -> None:
        self.wait_for("Serving runqlat metrics on", in_stderr=True)

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return super().stop(sig)


def histograms(text: str) -> dict[tuple, dict]:
    """{labels (without le): {"buckets": [(le, count)...], "sum": s, "count": c}}."""
    from prometheus_client.parser import text_string_to_metric_families

    (family,) = [f for f in text_string_to_metric_families(text) if f.name == runqlat.METRIC]
    assert family.type == "histogram"
    out: dict[tuple, dict] = {}
    for s in family.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        h = out.setdefault(key, {"buckets": []})
        if s.name.endswith("_bucket"):
            h["buckets"].append((float(s.labels["le"]), s.value))
        else:
            h[s.name.rsplit("_", 1)[1]] = s.value
    return out


def check_histogram(h: dict) -> None:
    """Prometheus' rules: cumulative, increasing le, +Inf == _count; our edges."""
    les = [le for le, _ in h["buckets"]]
    counts = [c for _, c in h["buckets"]]
    assert les[:-1] == runqlat.bucket_edges() and les[-1] == float("inf")
    assert counts == sorted(counts), counts
    assert counts[-1] == h["count"]
    assert h["sum"] >= 0


# --- exact edges, in the kernel -----------------------------------------------------------


def kernel_slots(deltas: list[int], upper_inclusive: bool) -> list[int]:
    from pybpf import isa, syscall, uapi

    a = Asm()
    a.ldx(R1, R1, 0, size=8)
    runqlat.latency_slot(a, R0, R1, upper_inclusive, unit_ns=1000)
    a.exit()
    with syscall.prog_load(uapi.BPF_PROG_TYPE_RAW_TRACEPOINT, isa.encode(a.assemble())) as fd:
        return [
            syscall.prog_test_run(fd.fileno(), ctx_in=d.to_bytes(8, "little")).retval
            for d in deltas
        ]


EDGE_DELTAS = sorted(
    {0, 1, 999, 1000, 1001, 1999, 2000, 2001}
    | {(1 << k) * 1000 + e for k in range(1, 28) for e in (-1, 0, 1)}
)


def test_exported_slots_are_exactly_le_their_edge(need_root: None) -> None:
    """The export build: slot k holds exactly the deltas d (ns) with
    edge(k-1) < d <= edge(k), edge(k) = 2^(k+1) us, the ``le`` of its bucket: a delta on an
    edge counts in that edge's bucket (cloudflare/ebpf_exporter#488's off-by-one)."""
    edges_ns = [round(e * 1e9) for e in runqlat.bucket_edges()]
    for d, slot in zip(EDGE_DELTAS, kernel_slots(EDGE_DELTAS, upper_inclusive=True)):
        if slot < runqlat.MAX_SLOTS - 1:
            assert d <= edges_ns[slot], (d, slot)
        else:
            assert d > edges_ns[-1], (d, slot)  # only in +Inf
        if slot > 0:
            assert d > edges_ns[slot - 1], (d, slot)


def test_runqlat_slots_are_runqlat_c(need_root: None) -> None:
    """``pybpf run runqlat``: slot k holds floor(d / 1000) in [low, high] of "low -> high"."""
    for d, slot in zip(EDGE_DELTAS, kernel_slots(EDGE_DELTAS, upper_inclusive=False)):
        low, high = runqlat.slot_bounds(slot)
        us = d // 1000
        assert low <= us and (us <= high or slot == runqlat.MAX_SLOTS - 1), (d, slot)


# --- the exporter process -----------------------------------------------------------------


def test_exposition_is_a_valid_monotonic_histogram(need_root: None, tmp_path: Path) -> None:
    e = Exporter([], tmp_path)
    try:
        e.wait_ready()
        ours = owned_bpf_ids(e.proc.pid)
        time.sleep(0.5)
        first = histograms(e.scrape())
        time.sleep(0.5)
        second = histograms(e.scrape())
        assert list(first) == [()] and list(second) == [()]  # one histogram, no labels
        check_histogram(first[()])
        check_histogram(second[()])
        assert first[()]["count"] > 0 and first[()]["sum"] > 0
        for (_, a), (_, b) in zip(first[()]["buckets"], second[()]["buckets"]):
            assert b >= a  # counters: never reset by a scrape
        assert second[()]["count"] > first[()]["count"]
    finally:
        assert e.stop() == 0, e.err()
    assert "Traceback" not in e.err()
    assert_gone(ours)




SHORT_LIVED = "import time\ntime.sleep(0.05)\n"


def program_counters(text: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, s.labels["program"]): s.value
        for f in text_string_to_metric_families(text) if f.name.startswith("pybpf_program_")
        for s in f.samples if s.name.endswith("_total")
    }  # fmt: skip


def test_bpf_stats_count_the_programs_cost(need_root: None, tmp_path: Path) -> None:
    """--bpf-stats: pybpf_program_runs_total / _run_seconds_total of each program grow (the
    kernel counts while the exporter holds BPF_ENABLE_STATS), and stop counting after it
    exits (the stats fd is closed with it)."""
    e = Exporter(["--bpf-stats"], tmp_path)
    try:
        e.wait_ready()
        first = program_counters(e.scrape())
        time.sleep(0.5)
        second = program_counters(e.scrape())
    finally:
        assert e.stop() == 0, e.err()
    programs = {"sched_wakeup", "sched_wakeup_new", "sched_switch"}
    assert {p for _, p in second} == programs
    for name in ("pybpf_program_runs_total", "pybpf_program_run_seconds_total"):
        assert second[(name, "sched_switch")] > first[(name, "sched_switch")] > 0
    per_run = second[("pybpf_program_run_seconds_total", "sched_switch")] / second[
        ("pybpf_program_runs_total", "sched_switch")
    ]
    assert 1e-8 < per_run < 1e-4, per_run  # tens to hundreds of ns per run
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        assert f.read().strip() == "0"  # the kernel counts no more


def test_full_map_is_counted_as_dropped(need_root: None, tmp_path: Path) -> None:
    """--max-keys 1 with -L: one labelled histogram, and run_queue_latency_dropped_total
    counts the waits of every other thread (0 and present when nothing is dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    def dropped(text: str) -> float:
        (f,) = [f for f in text_string_to_metric_families(text)
                if f.name == "run_queue_latency_dropped"]  # fmt: skip
        return f.samples[0].value

    full, roomy = Exporter(["-L", "--max-keys", "1"], tmp_path), Exporter([], tmp_path)
    try:
        full.wait_ready()
        roomy.wait_ready()
        time.sleep(0.5)
        text = full.scrape()
        assert len(histograms(text)) == 1
        assert dropped(text) > 0
        assert dropped(roomy.scrape()) == 0
    finally:
        assert full.stop() == 0 and roomy.stop() == 0


def test_cap_other_and_exited_processes(need_root: None, tmp_path: Path) -> None:
    """-P --max-series 2: two labelled histograms and "other"; "other" never decreases while
    processes come and go, and the keys of exited processes leave the map."""
    e = Exporter(["-P", "--max-series", "2"], tmp_path)
    try:
        e.wait_ready()
        previous = 0.0
        for _ in range(4):
            for _ in range(5):
                subprocess.run([sys.executable, "-c", SHORT_LIVED], check=True)
            hs = histograms(e.scrape())
            labelled = [k for k in hs if dict(k)["pid"] != "other"]
            assert len(labelled) <= 2, list(hs)
            other = hs[(("comm", "other"), ("pid", "other"))]
            check_histogram(other)
            assert other["count"] >= previous
            previous = other["count"]
            for k, h in hs.items():
                check_histogram(h)
                assert re.fullmatch(r"\d+|other", dict(k)["pid"])
        # the keys of exited processes were deleted at the last scrape: what is left in the
        # map is (nearly all) live processes
        dump = subprocess.run(["bpftool", "-j", "map", "dump", "name", "hists"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert dump.returncode == 0, dump.stderr
        keys = [int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
                for entry in json.loads(dump.stdout)]  # fmt: skip
        assert keys
        dead = [k for k in keys if not os.path.exists(f"/proc/{k}")]
        assert len(dead) <= 2, (dead, keys)
    finally:
        assert e.stop() == 0, e.err()


def test_scrapes_while_busy_then_sigint(need_root: None, tmp_path: Path) -> None:
    """Scrapes keep answering, with valid histograms, under `stress-ng --switch` (well over
    100k sched events/s on 2 CPUs); Ctrl-C then ends it with nothing left behind."""
    e = Exporter(["-L"], tmp_path)
    with Children() as kids:
        try:
            e.wait_ready()
            ours = owned_bpf_ids(e.proc.pid)
            kids.add(subprocess.Popen(["stress-ng", "--switch", "2", "-t", "4", "--quiet"]))
            time.sleep(0.5)
            for _ in range(8):
                t0 = time.monotonic()
                hs = histograms(e.scrape())
                assert time.monotonic() - t0 < 5
                for h in hs.values():
                    check_histogram(h)
                time.sleep(0.2)
        finally:
            rc = e.stop(signal.SIGINT)
    assert rc == 0, e.err()
    assert_gone(ours)


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "runqlat", "--listen", "nonsense"], "expected HOST:PORT"),
        (["export", "runqlat", "-P", "-L"], "not allowed with"),
        (["export", "runqslower"], "has no metrics to export"),
        (["export", "nosuchprogram"], "no program named"),
        (["export", "runqlat", "--max-series", "5"], "--max-series caps the series of -P"),
        (["export", "runqlat", "--max-keys", "5"], "--max-keys sizes the histograms of -P"),
        (["export", "runqlat", "-p", "1", "--max-series", "5"], "--max-series caps"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pybpf", *args], cwd=REPO, env=tool_env(),
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # argparse prints its usage above
    assert "error:" in last and message in last, r.stderr


def test_port_in_use_is_one_line_and_leaves_nothing(need_root: None, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = kernel_ids()
        e = Exporter([], tmp_path, port=port)
        assert e.proc.wait(timeout=30) == 1
    err = e.err()
    assert err.startswith(f"pybpf: error: cannot listen on 127.0.0.1:{port}: "), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    deadline = time.monotonic() + 5
    while True:  # nothing of the failed run remains (maps go after an RCU grace period)
        now = kernel_ids()
        new = {k: set(now[k]) - set(before[k]) for k in now}
        mine = {k: {i for i in v if now[k][i].get("name", "") in NAMES} for k, v in new.items()}
        if not any(mine.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not any(mine.values()), mine


NAMES = {"sched_wakeup", "sched_wakeup_new", "sched_switch", "start", "hists", ".rodata"}
