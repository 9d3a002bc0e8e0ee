"""The PrometheusServer harness against a trivial prometheus_client exporter.

A real Prometheus (``/usr/bin/prometheus``) scrapes an in-process exporter serving:

- ``x``: a Histogram with five fixed observations (0.5, 1.5, 1.5, 3, 6; buckets 1, 2, 4, 8);
- ``y``: the same distribution again at every scrape (a custom collector), so ``rate()`` of
  its buckets is that distribution and histogram_quantile over it is exact;

plus a target where nothing listens.  Without the binary the tests skip, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import socket
import threading

import pytest
from policy import IN_CI, unavailable
from prometheus_server import (
    PrometheusError,
    PrometheusServer,
    find_prometheus,
    sample_value,
)

pytestmark = pytest.mark.oracle("prometheus")

try:
    import prometheus_client
    from prometheus_client.core import HistogramMetricFamily
except ImportError:  # the exporter's dependency; CI installs it
    if IN_CI:
        raise
    pytest.skip("prometheus_client is not installed", allow_module_level=True)

OBSERVATIONS = (0.5, 1.5, 1.5, 3.0, 6.0)
BUCKETS = (1.0, 2.0, 4.0, 8.0)
CUMULATIVE = {"1.0": 1, "2.0": 3, "4.0": 4, "8.0": 5, "+Inf": 5}
# histogram_quantile(0.5): rank 2.5 falls in (1, 2] holding ranks 1..3: 1 + (2.5-1)/(3-1).
P50 = 1.75
# histogram_quantile(0.99): rank 4.95 falls in (4, 8] holding ranks 4..5: 4 + 0.95 * 4.
P99 = 7.8
JOB = "harness"


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = find_prometheus()
    if path is None:
        unavailable("prometheus binary not found (CI=true: not skipped)")
    return path


class GrowingHistogram:
    """A collector whose histogram ``y`` gains OBSERVATIONS once more at every collect."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def collect(self):
        with self.lock:
            self.n += 1
            n = self.n
        h = HistogramMetricFamily(
            "y",
            "grows by OBSERVATIONS at each scrape",
            buckets=[(le, n * c) for le, c in CUMULATIVE.items()],
            sum_value=n * sum(OBSERVATIONS),
        )
        yield h


@pytest.fixture(scope="module")
def exporter():
    """An exporter on 127.0.0.1:<kernel-picked port>; yields its "host:port"."""
    registry = prometheus_client.CollectorRegistry()
    x = prometheus_client.Histogram("x", "fixed observations", buckets=BUCKETS, registry=registry)
    for v in OBSERVATIONS:
        x.observe(v)
    registry.register(GrowingHistogram())
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def dead_target():
    """A port bound (so nobody else takes it) but not listening: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def prom(prometheus_binary, exporter, dead_target):
    with PrometheusServer(
        [exporter, dead_target], scrape_interval=1.0, job=JOB, binary=prometheus_binary
    ) as server:
        # rate() needs two samples in its window.  Prometheus 2.42 scrapes first 5-10 s
        # after start (targets are synced on a 5 s tick), then every interval.
        server.wait_for_scrapes(2, timeout=30, targets=[exporter])
        yield server
    assert server.process is None and server.workdir is None


def test_targets(prom, exporter, dead_target):
    prom.wait_until(
        f'up{{instance="{dead_target}"}}',
        lambda r: len(r) == 1 and sample_value(r[0]) == 0,
        timeout=10,
    )
    by_instance = {t["labels"]["instance"]: t for t in prom.targets()}
    assert set(by_instance) == {exporter, dead_target}
    assert by_instance[exporter]["labels"]["job"] == JOB
    assert by_instance[exporter]["health"] == "up"
    assert by_instance[exporter]["scrapeUrl"] == f"http://{exporter}/metrics"
    assert by_instance[exporter]["lastError"] == ""
    assert by_instance[dead_target]["health"] == "down"
    assert "refused" in by_instance[dead_target]["lastError"]
    assert prom.scrape_counts()[exporter] >= 2
    assert prom.scrape_counts().get(dead_target, 0) == 0


def test_fixed_histogram(prom, exporter):
    sel = f'{{job="{JOB}",instance="{exporter}"}}'
    assert prom.query_value(f"x_count{sel}") == len(OBSERVATIONS)
    assert prom.query_value(f"x_sum{sel}") == pytest.approx(sum(OBSERVATIONS))
    buckets = {s["metric"]["le"]: sample_value(s) for s in prom.query(f"x_bucket{sel}")}
    assert buckets == CUMULATIVE
    # histogram_quantile works on raw cumulative counts too (not only on rates).
    assert prom.query_value("histogram_quantile(0.5, sum by (le) (x_bucket))") == pytest.approx(P50)


def test_quantiles_over_rate(prom):
    p50 = prom.query_value("histogram_quantile(0.5, sum by (le) (rate(y_bucket[30s])))")
    p99 = prom.query_value("histogram_quantile(0.99, sum by (le) (rate(y_bucket[30s])))")
    avg = prom.query_value("sum(rate(y_sum[30s])) / sum(rate(y_count[30s]))")
    assert p50 == pytest.approx(P50)
    assert p99 == pytest.approx(P99)
    assert avg == pytest.approx(sum(OBSERVATIONS) / len(OBSERVATIONS))


def test_query_errors(prom):
    with pytest.raises(PrometheusError, match="bad_data: .*parse error"):
        prom.query("sum(")
    with pytest.raises(PrometheusError, match="expected one sample, got 0"):
        prom.query_value("no_such_metric")


def test_missing_binary(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PrometheusError, match="prometheus binary not found"):
        PrometheusServer(["127.0.0.1:1"]).start()


def test_failed_start_reports_log(prometheus_binary):
    server = PrometheusServer(["127.0.0.1:1"], extra_args=["--no-such-flag"])
    with pytest.raises(PrometheusError, match=r"exited with status \d+(.|\n)*no-such-flag"):
        server.start()
    assert server.process is None and server.workdir is None
