"""A real Prometheus server for tests: scrape exporters, then ask it questions over its HTTP API.

``PrometheusServer`` writes a ``prometheus.yml`` into a temporary directory, runs the
``prometheus`` binary found on PATH (Debian's ``/usr/bin/prometheus``) with its TSDB in that
directory and its web/API listener on ``127.0.0.1:<free port>`` only, and waits for ``/-/ready``.
On exit it stops the server (SIGTERM, then SIGKILL) and removes the directory.

    with PrometheusServer(["127.0.0.1:9435"], scrape_interval=1.0, job="pybpf_runqlat") as prom:
        prom.wait_for_scrapes(2)
        prom.query('histogram_quantile(0.5, sum by (le) (rate(x_bucket[30s])))')

Only the standard library is used (the HTTP API through urllib); nothing here imports pybpf.

Timing (Prometheus 2.42): ``/-/ready`` answers ~0.1 s after start, but the first scrape comes
5-10 s later whatever the scrape interval (usually ~5.2 s): the discovery manager and the
scrape manager each pass target updates on their own fixed 5 s tick, which no flag changes;
the first scrape then waits for the target's hashed offset within one interval.  Budget
~10 s + N intervals for ``wait_for_scrapes(N)``.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = [
    "PrometheusError",
    "PrometheusServer",
    "find_prometheus",
    "free_port",
    "sample_value",
]

_PR_SET_PDEATHSIG = 1


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or an API call failed."""


def find_prometheus() -> Optional[str]:
    """The path of the ``prometheus`` binary on PATH, or None."""
    return shutil.which("prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sample_value(sample: dict) -> float:
    """The float value of one instant-vector element (``{"metric":..., "value": [t, "v"]}``)."""
    return float(sample["value"][1])


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``1s``, ``500ms``."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        raise ValueError(f"duration must be positive, got {seconds!r}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _prctl() -> Optional[Callable[..., int]]:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # looked up here, not in the forked child


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the thread that started it dies (Linux), so a
    killed test run leaves no Prometheus behind.  Best effort: skipped without prctl."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class PrometheusServer:
    """A throwaway Prometheus server scraping ``targets`` (``"127.0.0.1:PORT"`` strings).

    Use as a context manager (or call ``start()``/``stop()``).  Attributes once started:
    ``port``, ``url`` (``http://127.0.0.1:PORT``), ``workdir`` (temp dir with
    ``prometheus.yml``, ``data/`` and ``prometheus.log``), ``process`` (the Popen).
    """

    def __init__(
        self,
        targets: Sequence[str],
        scrape_interval: float = 1.0,
        job: str = "test",
        *,
        metrics_path: str = "/metrics",
        scrape_timeout: Optional[float] = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        binary: Optional[str] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if isinstance(targets, str):
            targets = [targets]
        self.targets_config = list(targets)
        if not self.targets_config:
            raise ValueError("PrometheusServer needs at least one scrape target")
        self.scrape_interval = float(scrape_interval)
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_timeout = (
            self.scrape_interval if scrape_timeout is None else float(scrape_timeout)
        )
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary
        self.extra_args = list(extra_args)
        self.workdir: Optional[Path] = None
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self._log = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self) -> dict:
        """The prometheus.yml contents (written as JSON, which is YAML)."""
        return {
            "global": {
                "scrape_interval": _duration(self.scrape_interval),
                "scrape_timeout": _duration(self.scrape_timeout),
                "evaluation_interval": _duration(self.scrape_interval),
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets_config}],
                }
            ],
        }

    def start(self) -> None:
        """Write the config, start Prometheus, wait for ``/-/ready``."""
        if self.process is not None:
            raise PrometheusError("PrometheusServer already started")
        binary = self.binary or find_prometheus()
        if not binary:
            raise PrometheusError(
                "prometheus binary not found on PATH (Debian/Ubuntu: apt-get install prometheus)"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="pybpf-prometheus-"))
        try:
            config_file = self.workdir / "prometheus.yml"
            config_file.write_text(json.dumps(self.config(), indent=2) + "\n")
            # A port picked by the kernel can be taken before Prometheus binds it: retry then.
            for attempt in range(3):
                self._spawn(binary, config_file)
                try:
                    self._wait_ready()
                    return
                except PrometheusError:
                    in_use = "address already in use" in self.stderr_tail().lower()
                    self._kill()
                    if not in_use or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise

    def _spawn(self, binary: str, config_file: Path) -> None:
        assert self.workdir is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Quiet: warnings and errors only (logs go to stderr).
            "--log.level=warn",
            # Nothing outlives the test; keep the TSDB from planning for days of data.
            "--storage.tsdb.retention.time=1h",
            # Default console dirs are /etc/prometheus/*; point them at nothing of the host's.
            f"--web.console.templates={self.workdir / 'consoles'}",
            f"--web.console.libraries={self.workdir / 'console_libraries'}",
            *self.extra_args,
        ]
        if self._log is not None:
            self._log.close()
        self._log = open(self.workdir / "prometheus.log", "ab")
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            rc = self.process.poll()
            if rc is not None:
                raise PrometheusError(
                    f"prometheus exited with status {rc} before it was ready; "
                    f"its log ends:\n{self.stderr_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:  # 503 while the TSDB opens
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(getattr(e, "reason", e))
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"prometheus at {self.url} not ready after {self.startup_timeout:.0f} s "
                    f"(last: {last}); its log ends:\n{self.stderr_tail()}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        """Terminate the process: SIGTERM, wait, then SIGKILL."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop Prometheus and remove the temp dir (idempotent)."""
        try:
            self._kill()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def stderr_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines Prometheus wrote (stdout and stderr share one log)."""
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    # -- HTTP API --------------------------------------------------------------------------

    def api(self, path: str, params: Optional[dict] = None, timeout: float = 10.0) -> Any:
        """GET ``/api/v1/<path>`` (POST when params are given) and return its ``data``."""
        if self.url is None or self.process is None:
            raise PrometheusError("PrometheusServer is not running")
        url = f"{self.url}/api/v1/{path.lstrip('/')}"
        body = urllib.parse.urlencode(params).encode() if params else None
        req = urllib.request.Request(url, data=body)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:  # 400/422/503 carry a JSON error body
            raw = e.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {e.code}: {raw[:500]!r}") from None
        else:
            doc = json.loads(raw)
        if doc.get("status") != "success":
            raise PrometheusError(
                f"{path} {params or ''}: {doc.get('errorType', '?')}: {doc.get('error', doc)}"
            )
        return doc["data"]

    def query(self, expr: str, at: Optional[float] = None) -> list:
        """Instant query; returns ``data.result`` (a list for vectors, ``[t, "v"]`` for
        scalars and strings)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", params)["result"]

    def query_value(self, expr: str) -> float:
        """The float value of an instant query that must return exactly one sample."""
        data = self.api("query", {"query": expr})
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return float(result[1])
        if len(result) != 1:
            raise PrometheusError(f"{expr!r}: expected one sample, got {len(result)}: {result}")
        return sample_value(result[0])

    def targets(self) -> list:
        """``activeTargets`` from ``/api/v1/targets`` (labels, health, lastError, ...)."""
        return self.api("targets")["activeTargets"]

    # -- waiting ---------------------------------------------------------------------------

    def wait_until(
        self,
        expr: str,
        predicate: Callable[[list], bool],
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> list:
        """Poll ``query(expr)`` until ``predicate(result)`` is true; return that result.

        On timeout, raise PrometheusError with the last result and the targets' states."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"timed out after {timeout:.1f} s waiting on {expr!r}; last result: "
                    f"{result}; targets: {self._targets_summary()}"
                )
            if self.process is None or self.process.poll() is not None:
                raise PrometheusError(f"prometheus died; its log ends:\n{self.stderr_tail()}")
            time.sleep(interval)

    def scrape_counts(self) -> dict:
        """Successful scrapes so far, per target (instance): ``sum_over_time(up[1h])``."""
        expr = f'sum_over_time(up{{job="{self.job}"}}[1h])'
        return {s["metric"].get("instance"): int(sample_value(s)) for s in self.query(expr)}

    def wait_for_scrapes(
        self, n: int = 1, timeout: float = 30.0, targets: Optional[Sequence[str]] = None
    ) -> dict:
        """Wait until every target in ``targets`` (default: all configured) has been scraped
        successfully (``up == 1``) at least ``n`` times; return the counts per target.

        The samples of a scrape and its ``up`` sample are committed together, so once this
        returns, the n-th scrape's data is queryable."""
        want = list(self.targets_config if targets is None else targets)
        expr = f'sum_over_time(up{{job="{self.job}"}}[1h])'

        def enough(result: list) -> bool:
            got = {s["metric"].get("instance"): sample_value(s) for s in result}
            return all(got.get(t, 0) >= n for t in want)

        self.wait_until(expr, enough, timeout=timeout)
        return self.scrape_counts()

    def _targets_summary(self) -> str:
        try:
            return (
                "; ".join(
                    f"{t['labels'].get('instance')}: health={t.get('health')} "
                    f"lastScrape={t.get('lastScrape')} lastError={t.get('lastError')!r}"
                    for t in self.targets()
                )
                or "(none yet: Prometheus 2.42 syncs targets ~5 s after start)"
            )
        except PrometheusError as e:
            return f"(unavailable: {e})"
