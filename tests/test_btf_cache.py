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


# --------------------------------------------------------------------------- on by default


def kernel_cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("vmlinux-*.btfc")) if directory.exists() else []


needs_build_id = pytest.mark.skipif(
    not KERNEL.exists() or btf_cache.kernel_build_id() is None,
    reason="kernel has no BTF or exposes no build id",
)


@needs_build_id
def test_on_by_default_and_off_with_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BTF.kernel() writes and then uses the cache with no setting at all; PYBPF_BTF_CACHE=0
    neither reads nor writes it."""
    monkeypatch.delenv("PYBPF_BTF_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cold = BTF.kernel()
    want = cold.find("task_struct", BTF_KIND_STRUCT)
    btf_cache.save_all()
    (cfile,) = kernel_cache_files(tmp_path / "pybpf")
    warm = BTF.kernel()
    assert type(warm._data).__name__ == "mmap" and warm.find("task_struct", BTF_KIND_STRUCT) == want
    for off in ("0", "off"):
        monkeypatch.setenv("PYBPF_BTF_CACHE", off)
        plain = BTF.kernel()
        assert type(plain._data).__name__ != "mmap" and not plain._find_memo
    btf_cache.save_all()  # the cached loads above: written now, before the file goes
    cfile.unlink()
    monkeypatch.setenv("PYBPF_BTF_CACHE", "0")
    BTF.kernel().find("pid_t")
    btf_cache.save_all()
    assert not kernel_cache_files(tmp_path / "pybpf")


def test_no_home_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $HOME (and no XDG_CACHE_HOME) "~" stays unexpanded: the cache is off rather
    than written to a directory named "~" under the current directory."""
    for var in ("HOME", "XDG_CACHE_HOME", "PYBPF_BTF_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)
    monkeypatch.chdir(tmp_path)
    assert btf_cache.cache_dir() == ""
    path = tmp_path / "a.btf"
    path.write_bytes(build_all_kinds()[0].encode())
    btf = btf_cache.load_cached(path)
    assert btf.find("pid_t") == [10]
    btf_cache.save_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.btf"]


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_directory(tmp_path: Path, where: str) -> None:
    """A cache directory that cannot be created (a path under a regular file; /proc, which
    refuses mkdir even to root): same answers as a fresh parse, nothing raised at exit."""
    path = tmp_path / "a.btf"
    path.write_bytes(build_all_kinds()[0].encode())
    if where == "under-a-file":
        (tmp_path / "file").write_bytes(b"")
        directory = str(tmp_path / "file" / "cache")
    else:
        directory = "/proc/pybpf-cache"
    btf = btf_cache.load_cached(path, directory)
    want = lookups(btf)
    btf_cache.save_all()  # swallows the failure
    assert not os.path.exists(directory)
    assert lookups(btf_cache.load_cached(path, directory)) == want == lookups(fresh(path))
    btf_cache.save_all()


@needs_build_id
@pytest.mark.parametrize("damage", ["flip-in-btf-copy", "flip-in-memo", "truncate", "empty",
                                    "other-code"])
def test_damaged_vmlinux_cache_never_used(tmp_path: Path, damage: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The vmlinux cache file holds a copy of the BTF: a byte changed anywhere in it (the copy,
    the memo), a truncated or empty file, or a file written by other code (another pybpf
    version or source) is ignored and the answers are the fresh parse's."""
    cache = str(tmp_path)
    first = btf_cache.load_cached(str(KERNEL), cache)
    ts = first.find("task_struct", BTF_KIND_STRUCT)
    btf_cache.save_all()
    (cfile,) = kernel_cache_files(tmp_path)
    raw = bytearray(cfile.read_bytes())
    if damage == "flip-in-btf-copy":
        # the name of task_struct's first member, in the string section of the copy: a
        # wrong name would be served if only the index were checked
        t = first.type(ts[0])
        pos = raw.index(b"\0" + t.members[0].name.encode() + b"\0") + 1
        raw[pos] ^= 0x20
    elif damage == "flip-in-memo":
        raw[-btf_cache._TRAILER.size - 3] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) // 3]
    elif damage == "empty":
        raw = bytearray()
    if damage == "other-code":
        monkeypatch.setattr(btf_cache, "_code_tag", b"\xde\xad\xbe\xef")
    else:
        cfile.write_bytes(bytes(raw))
    again = btf_cache.load_cached(str(KERNEL), cache)
    assert type(again._data).__name__ != "mmap" and not again._find_memo
    assert again.find("task_struct", BTF_KIND_STRUCT) == ts
    assert again.type(ts[0]) == BTF.from_file(KERNEL).type(ts[0])


WRITER = """
import sys
from pybpf import btf_cache
from pybpf.btf import BTF_KIND_STRUCT
path, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for round_ in range(n):
    btf = btf_cache.load_cached(path, cache)
    btf.find(f"name{round_ % 7}")  # a memo that differs from the file's: a rewrite at exit
    btf.find("task_struct", BTF_KIND_STRUCT)
    btf_cache.save_all()
print("ok")
"""


@needs_build_id
def test_shared_directory_concurrent_writers_and_readers(tmp_path: Path) -> None:
    """Four processes load, look up and rewrite the same vmlinux cache file 15 times each,
    at once: every load is either a whole old file or a whole new one (each answer is the
    fresh parse's), no temporary file is left behind and the last file is valid."""
    cache = str(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(KERNEL), cache, "15"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for _ in range(4)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    (cfile,) = kernel_cache_files(tmp_path)
    warm = btf_cache.load_cached(str(KERNEL), cache)
    assert type(warm._data).__name__ == "mmap"
    want = BTF.from_file(KERNEL).find("task_struct", BTF_KIND_STRUCT)
    assert warm.find("task_struct", BTF_KIND_STRUCT) == want


def test_long_build_id_identity_is_hashed() -> None:
    """A 32-byte build ID makes the identity longer than the trailer's 64 bytes: it is kept
    as its SHA-256 (not silently never cached)."""
    short, long = b"x" * 60, b"y" * 90
    assert btf_cache._fit(short) == short
    assert len(btf_cache._fit(long)) == 32 and btf_cache._fit(long) != btf_cache._fit(b"y" * 91)
