"""Maps, structs, read-only globals and events of the language, run in the kernel.

A socket filter written in the language is loaded and run with BPF_PROG_TEST_RUN;
its effects are read back through the kernel's map API and the ring buffer, and
compared with what the program says it does.
"""

from __future__ import annotations

import pytest

from pybpf.lang import (
    ArrayMap,
    HashMap,
    LruHashMap,
    PerCPUArray,
    PerCPUHashMap,
    ReadOnly,
    RingBuf,
    Struct,
    build,
    char,
    function,
    program,
    s32,
    u32,
    u64,
)


class Pair(Struct):
    a: u32
    b: u64


class Event(Struct):
    seq: u64
    key: u32
    tag: char[8]
    neg: s32


counts = HashMap(u32, u64, 16)
arr = ArrayMap(u64, 4)
pcpu = PerCPUArray(u64, 1)
pairs = HashMap(u32, Pair, 8)
events = RingBuf(4096)
lru = LruHashMap(u32, u64, 8)
pcpu_hash = PerCPUHashMap(u32, u64, 8)


class opts(ReadOnly):  # noqa: N801 - reads like a C global
    k: u32
    base: u64
    tag: char[8]


@function
def triple(x: u64) -> u64:
    return x * 3


@program("socket")
def maps_prog(skb) -> s32:
    counts[opts.k] += 5  # inserted the first time, atomically added after
    counts[opts.k + 1] = 7
    arr[2] = counts[opts.k] * 2
    if counts.get(100) is None:
        arr[3] = triple(arr[3] + 1)
    p = Pair(a=opts.k, b=opts.base)
    pairs[1] = p
    q = pairs.get(1)
    if q is None:
        return 1
    q.b += 10
    del counts[opts.k + 1]
    pcpu[0] += 1
    ev = Event()
    ev.seq = arr[3]
    ev.key = q.a
    ev.tag = opts.tag
    ev.tag[0] = 72  # "H"
    ev.neg = -ev.key
    lru[opts.k] += 1
    pcpu_hash[1] -= 3
    events.output(ev)
    return 0


@pytest.fixture
def loaded(need_root):
    from pybpf.btf import BTF
    from pybpf.loader import LoadedObject
    from pybpf.object import prepare

    compiled = build("maps", [maps_prog], BTF.kernel())
    with LoadedObject(prepare(compiled.spec, BTF.kernel()),
                      {"k": 9, "base": 1000, "tag": "hello"}) as obj:  # fmt: skip
        obj.load()
        yield compiled, obj


@pytest.mark.kernel
def test_maps_structs_globals_and_events(loaded):
    from pybpf import syscall
    from pybpf.ringbuf import RingBuffer

    compiled, obj = loaded
    maps = compiled.typed_maps(obj)
    for _ in range(2):
        result = syscall.prog_test_run(obj.programs["maps_prog"].fileno(), bytes(14))
        assert result.retval == 0
    assert dict(maps["counts"].typed_items()) == {9: 10}  # 5 inserted, 5 added; 10 deleted
    assert maps["arr"][2] == 20 and maps["arr"][3] == (1 * 3 + 1) * 3
    assert sum(maps["pcpu"][0]) == 2
    pair = maps["pairs"][1]
    assert isinstance(pair, Pair) and (pair.a, pair.b) == (9, 1010)
    got: list[Event] = []
    with RingBuffer(obj.maps["events"].fd,
                    on_sample=lambda d: got.append(Event.decode(d))) as rb:  # fmt: skip
        rb.consume()
    assert got == [Event(seq=3, key=9, tag="Hello", neg=-9), Event(seq=12, key=9, tag="Hello",
                                                                  neg=-9)]  # fmt: skip
    assert maps["lru"][9] == 2
    # u64 values wrap, as in C (the two runs may land on two CPUs' slots)
    assert sum(maps["pcpu_hash"][1]) % (1 << 64) == (-6) % (1 << 64)


def test_event_layout_matches_c():
    # struct { u64 seq; u32 key; char tag[8]; s32 neg; }: 8 + 4 + 8 + 4 = 24, align 8
    assert Event.size() == 24
    raw = Event.encode(Event(seq=1, key=2, tag="ab", neg=-3))
    assert raw == (1).to_bytes(8, "little") + (2).to_bytes(4, "little") + b"ab" + bytes(6) + (
        -3).to_bytes(4, "little", signed=True)  # fmt: skip
    assert Event.decode(raw) == Event(seq=1, key=2, tag="ab", neg=-3)


def test_program_is_pure_data_without_kernel():
    compiled = build("maps", [maps_prog])  # no BTF: helpers checked when prepared
    spec = compiled.spec
    assert [p.name for p in spec.programs] == ["maps_prog"]
    assert {m.name for m in spec.maps} == {"counts", "arr", "pcpu", "pairs", "events", "lru",
                                           "pcpu_hash"}  # fmt: skip
    assert spec.rodata is not None and set(spec.rodata.variables) == {"k", "base", "tag"}
    # the subprogram follows the program, reached by a bpf-to-bpf call
    insns = spec.programs[0].insns
    assert any(i.src == 1 and i.opcode == 0x85 for i in insns)  # BPF_PSEUDO_CALL


def test_the_language_is_pure():
    """Compiling needs no kernel: no syscall, map, loader module, nor ctypes, is imported."""
    import subprocess
    import sys

    code = ("import sys, pybpf.lang, pybpf.lang.tool\n"
            "import pybpf.lang.program, pybpf.lang.codegen, pybpf.lang.kernel\n"
            "bad = [m for m in ('pybpf.syscall', 'pybpf.maps', 'pybpf.loader', 'ctypes')"
            " if m in sys.modules]\n"
            "print(bad)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
