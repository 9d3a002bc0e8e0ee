"""The on-disk BTF cache: same answers as a fresh parse, never stale, damage ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from policy import require_root
from test_btf import build_all_kinds

from pybpf import btf_cache
from pybpf.btf import BTF, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF
from pybpf.btf_dump import dump_raw

ROOT = Path(__file__).resolve().parent.parent
KERNEL = Path("/sys/kernel/btf/vmlinux")


def lookups(btf: BTF) -> tuple:
    return (btf.find("task", BTF_KIND_STRUCT), btf.find_prefix("e"), btf.find("pid_t"),
            btf.find("nope"))


def fresh(path: Path) -> BTF:
    return BTF.from_file(path)


def test_file_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.btf"
    path.write_bytes(build_all_kinds()[0].encode())
    cache = tmp_path / "cache"
    cold = btf_cache.load_cached(path, str(cache))
    want = lookups(cold)
    assert not cache.exists()  # nothing written on the start-up path
    btf_cache.save_all()
    (cfile,) = cache.iterdir()
    warm = btf_cache.load_cached(path, str(cache))
    assert warm._find_memo and lookups(warm) == want == lookups(fresh(path))
    assert list(dump_raw(warm)) == list(dump_raw(fresh(path)))
    assert warm._offs == fresh(path)._offs


def test_file_cache_never_stale(tmp_path: Path) -> None:
    path = tmp_path / "a.btf"
    data = build_all_kinds()[0].encode()
    path.write_bytes(data)
    cache = str(tmp_path / "cache")
    assert btf_cache.load_cached(path, cache).find("pid_t") == [10]
    btf_cache.save_all()
    # same size and path, other content: the renamed type must not be found from the cache
    path.write_bytes(data.replace(b"\0pid_t\0", b"\0tid_t\0"))
    again = btf_cache.load_cached(path, cache)
    assert again.find("pid_t") == [] and again.find("tid_t") == [10]


@pytest.mark.parametrize(
    "damage", ["truncate", "flip", pytest.param("foreign", marks=pytest.mark.kernel)]
)
def test_damaged_cache_ignored(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "a.btf"
    path.write_bytes(build_all_kinds()[0].encode())
    cache = tmp_path / "cache"
    want = lookups(btf_cache.load_cached(path, str(cache)))
    btf_cache.save_all()
    (cfile,) = cache.iterdir()
    raw = cfile.read_bytes()
    if damage == "truncate":
        cfile.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        cfile.write_bytes(raw[:10] + bytes([raw[10] ^ 0xFF]) + raw[11:])
    else:
        require_root()
        os.chown(cfile, 65534, 65534)
    btf = btf_cache.load_cached(path, str(cache))
    assert not btf._find_memo  # nothing taken from the damaged or foreign file
    assert lookups(btf) == want


@pytest.mark.skipif(not KERNEL.exists(), reason="kernel has no BTF")
def test_vmlinux_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if btf_cache.kernel_build_id() is None:
        pytest.skip("kernel exposes no build id")
    cache = str(tmp_path)
    cold = btf_cache.load_cached(str(KERNEL), cache)
    want = (cold.find("task_struct", BTF_KIND_STRUCT),
            cold.find_prefix("btf_trace_sched_w", BTF_KIND_TYPEDEF))
    btf_cache.save_all()
    warm = btf_cache.load_cached(str(KERNEL), cache)
    assert type(warm._data).__name__ == "mmap"  # no sysfs read on a hit
    assert warm._find_memo
    assert (warm.find("task_struct", BTF_KIND_STRUCT),
            warm.find_prefix("btf_trace_sched_w", BTF_KIND_TYPEDEF)) == want
    ts = want[0][0]
    assert warm.type(ts) == BTF.kernel().type(ts)
    # another kernel (another build id): the file is not used
    monkeypatch.setattr(btf_cache, "kernel_build_id", lambda: b"\x01" * 20)
    other = btf_cache.load_cached(str(KERNEL), cache)
    assert type(other._data).__name__ != "mmap" and not other._find_memo


@pytest.mark.skipif(not KERNEL.exists(), reason="kernel has no BTF")
def test_cli_with_cache(tmp_path: Path) -> None:
    env = dict(os.environ, PYBPF_BTF_CACHE=str(tmp_path))
    outs = [subprocess.run([sys.executable, "-m", "pybpf", "btf", "show", "task_struct"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
            for _ in range(2)]
    assert outs[0].returncode == outs[1].returncode == 0
    assert outs[0].stdout == outs[1].stdout
    assert any(p.name.startswith("vmlinux-") for p in tmp_path.iterdir())
