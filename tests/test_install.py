"""A fresh venv, ``pip install .``, and the headline command with no compiler on PATH."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    where = tmp_path_factory.mktemp("venv")
    env_dir = where / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # Build from a copy of the tracked files only: what a clean clone has.
    src = where / "src"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = src / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name.decode()).is_file():
            shutil.copy2(REPO / name.decode(), target)
    subprocess.run(
        [env_dir / "bin" / "python", "-m", "pip", "install", "-q", str(src)],
        check=True, cwd=where,
    )  # fmt: skip
    return env_dir


def test_no_generic_top_level_names(installed):
    site = next(installed.glob("lib/python*/site-packages"))
    for program in ("runqslower.py", "runqlat.py", "_runq.py", "_bits.py"):
        assert (site / "pybpf" / "programs" / program).is_file(), program
    for generic in ("programs", "btf", "tests"):
        assert not (site / generic).exists(), f"{generic} landed in site-packages"


def test_headline_command_in_fresh_venv(installed, tmp_path, need_root):
    path = str(installed / "bin")  # nothing else: no cc, no clang, no bpftool
    for tool in ("cc", "gcc", "clang", "llc", "bpftool"):
        assert shutil.which(tool, path=path) is None
    out = tmp_path / "out.txt"
    env = {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for argv in (
        [str(installed / "bin" / "python"), "-m", "pybpf", "run", "runqslower", "--min-us", "200"],
        [str(installed / "bin" / "pybpf"), "run", "runqslower", "200"],
    ):
        hogs = []
        with out.open("w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
        try:
            deadline = time.monotonic() + 15
            while "LAT(us)" not in out.read_text():
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "no header within 15 s"
                time.sleep(0.05)
            # Three CPU hogs per CPU make run-queue waits of milliseconds.
            hogs = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(3 * (os.cpu_count() or 1))
            ]
            time.sleep(2)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err.decode()
        lines = out.read_text().splitlines()
        assert lines[0] == "Tracing run queue latency higher than 200 us"
        assert lines[1].split() == ["TIME", "COMM", "TID", "LAT(us)"]
        rows = lines[2:]
        assert rows, "no rows under CPU load"
        for row in rows:
            assert int(row[33:48]) > 200, row


def test_runqlat_and_export_in_fresh_venv(installed, tmp_path, need_root):
    """The installed runqlat prints a histogram; the installed exporter (prometheus_client
    came with `pip install .`) serves one."""
    import socket
    import urllib.request

    env = {"PATH": str(installed / "bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    out = subprocess.run([str(installed / "bin" / "pybpf"), "run", "runqlat", "1", "1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usecs               : count    distribution" in out.stdout, out.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(installed / "bin" / "pybpf"), "export", "runqlat", "--listen",
                             f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)  # fmt: skip
    try:
        assert "Serving runqlat metrics" in proc.stderr.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'run_queue_latency_seconds_bucket{le="+Inf"}' in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
