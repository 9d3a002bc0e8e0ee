"""A real Prometheus server scrapes `pybpf export runqlat` while we make run-queue latency.

The workload of test_runqlat.py: a spinner pinned to a CPU, and a SCHED_FIFO hog on the same
CPU that wakes every 6 ms and spins for 3 ms, so nearly every wait of the spinner lasts about
3 ms: in the (2.048, 4.096] ms bucket.  The exporter runs with ``-p SPINNER`` and Prometheus
(Debian's package, listening on 127.0.0.1 only) scrapes it every second; through
Prometheus' HTTP API, ``histogram_quantile`` over the rate of the scraped buckets must fall
in that bucket, and the average from ``_sum`` / ``_count`` must be about 3 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_rq import FIFO_HOG, SPINNER, Children, assert_gone, owned_bpf_ids
from policy import unavailable
from prometheus_server import PrometheusServer, find_prometheus
from test_exporter import Exporter

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("prometheus")]

SPIN_MS = 3
JOB = "pybpf_runqlat"
METRIC = "run_queue_latency_seconds"


@pytest.fixture
def prometheus_binary(need_root: None) -> str:
    path = find_prometheus()
    if path is None:
        unavailable("prometheus not installed (CI=true: not skipped; .ci/run installs it)")
    return path


def test_prometheus_scrapes_sane_quantiles(prometheus_binary: str, tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    others = os.sched_getaffinity(0) - {cpu}
    assert others, "needs 2 CPUs"
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, others)  # exporter and Prometheus inherit it
    try:
        with Children() as kids:
            spinner = kids.add(subprocess.Popen(
                [sys.executable, "-c", SPINNER, str(cpu)], stdout=subprocess.PIPE, text=True
            ))  # fmt: skip
            spid = int(spinner.stdout.readline())
            exporter = Exporter(["-p", str(spid)], tmp_path)
            try:
                exporter.wait_ready()
                ours = owned_bpf_ids(exporter.proc.pid)
                kids.add(subprocess.Popen(
                    [sys.executable, "-c", FIFO_HOG, str(cpu), str(SPIN_MS), "60", "0.006"],
                    stdout=subprocess.DEVNULL,
                ))  # fmt: skip
                target = f"127.0.0.1:{exporter.port}"
                with PrometheusServer([target], scrape_interval=1.0, job=JOB) as prom:
                    assert prom.url.startswith("http://127.0.0.1:")
                    prom.wait_for_scrapes(6, timeout=60)
                    window = f'{{job="{JOB}"}}[5s]'
                    p50 = prom.query_value(
                        f"histogram_quantile(0.5, sum by (le) (rate({METRIC}_bucket{window})))"
                    )
                    p90 = prom.query_value(
                        f"histogram_quantile(0.9, sum by (le) (rate({METRIC}_bucket{window})))"
                    )
                    mean = prom.query_value(
                        f"sum(rate({METRIC}_sum{window})) / sum(rate({METRIC}_count{window}))"
                    )
                    waits = prom.query_value(f"sum(rate({METRIC}_count{window}))")
                    (up,) = prom.targets()
                    assert up["health"] == "up", up
            finally:
                assert exporter.stop() == 0, exporter.err()
    finally:
        os.sched_setaffinity(0, saved)
    # the hog preempts the spinner about every 9 ms: ~110 waits/s, nearly all ~3 ms long
    assert 50 < waits < 200, waits
    assert 0.002048 < p50 <= 0.004096, p50
    assert 0.002048 < p90 <= 0.004096, p90
    assert 0.0015 < mean < 0.0045, mean  # a few short waits (kworkers) pull it down
    assert_gone(ours)
