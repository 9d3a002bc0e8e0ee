"""Differential tests of the language's integer semantics against the kernel.

Random typed functions (tests/lang_oracle.py) are compiled, called from a socket
filter that takes their arguments from an array map, loaded (the verifier must accept
every one) and run with BPF_PROG_TEST_RUN; the result must equal the C-semantics
evaluation of the same program in Python.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lang_oracle import MIX, TYPES, programs, render, run, wrap

import pybpf.lang as lang
from pybpf.asm import FP, R0, R1, R2, R3, R6, Asm
from pybpf.lang.program import SourceFunction, compile_subprogram
from pybpf.object import MapSpec, ObjectSpec, ProgramSpec, prepare
from pybpf.uapi import BPF_MAP_TYPE_ARRAY

pytestmark = pytest.mark.kernel

NAMESPACE = dict(vars(lang))
NAMESPACE["mix"] = SourceFunction(MIX, NAMESPACE, "<mix>")
EXAMPLES = int(os.environ.get("PYBPF_LANG_EXAMPLES", "500"))


@pytest.fixture(scope="module")
def _kernel():
    from pybpf import syscall
    from pybpf.btf import BTF
    from pybpf.loader import LoadedObject

    return BTF.kernel(), LoadedObject, syscall


@pytest.fixture
def kernel(need_root, _kernel):
    return _kernel


def harness(fn: SourceFunction) -> list:
    """r1-r3 = io[0..2]; io[3] = f(r1, r2, r3)."""
    a = Asm()
    a.st(FP, -8, 0, size=4)
    a.mov(R2, FP).add(R2, -8)
    a.ld_map_fd(R1, "io")
    a.call("map_lookup_elem")
    a.jne(R0, 0, "found")
    a.mov(R0, 0).exit()
    a.label("found")
    a.mov(R6, R0)
    for i, reg in enumerate((R1, R2, R3)):
        a.ldx(reg, R6, 8 * i, size=8)
    a.call_sub(fn.__name__)
    a.stx(R6, 24, R0, size=8)
    a.mov(R0, 0).exit()
    compile_subprogram(fn, a)
    return a.assemble()


def run_in_kernel(kernel, program, vectors: list[list[int]]) -> list[int]:
    return run_source(kernel, render(program), [t for _, t in program[0]], vectors)


def run_source(kernel, text: str, types: list[str], vectors: list[list[int]]) -> list[int]:
    btf, LoadedObject, syscall = kernel
    fn = SourceFunction(text, NAMESPACE, "<generated>")
    spec = ObjectSpec("t", [ProgramSpec("t", "socket", harness(fn))],
                      [MapSpec("io", BPF_MAP_TYPE_ARRAY, 4, 32, 1)])  # fmt: skip
    results = []
    with LoadedObject(prepare(spec, btf)) as obj:
        obj.load()
        io = obj.maps["io"]
        for args in vectors:
            images = [wrap("u64", wrap(t, v)) for t, v in zip(types, args)]
            raw = b"".join(v.to_bytes(8, "little") for v in images) + bytes(8)
            io.update(b"\0\0\0\0", raw)
            syscall.prog_test_run(obj.programs["t"].fileno(), bytes(14))
            results.append(int.from_bytes(io.lookup(b"\0\0\0\0")[24:32], "little"))
    return results


def arg_values(t: str) -> st.SearchStrategy[int]:
    bits, signed = TYPES[t]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return st.one_of(st.sampled_from([lo, hi, 0, 1, -1 if signed else 2]), st.integers(lo, hi))


@st.composite
def cases(draw):
    program = draw(programs())
    vectors = [[draw(arg_values(t)) for _, t in program[0]] for _ in range(4)]
    return program, vectors


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_random_programs_match_c_semantics(kernel, case):
    program, vectors = case
    got = run_in_kernel(kernel, program, vectors)
    want = [run(program, args) for args in vectors]
    assert got == want, render(program)


SPILLS = """def f(a: u64, b: u64, c: u64) -> u64:
    x1 = a + 1
    x2 = b * 3
    x3 = c ^ a
    x4 = a - b
    x5 = b + c
    x6 = c * 7
    x7 = a | c
    y = mix(x1, s32(x2))
    z = mix(y, s32(x3))
    for i in range(3):
        z += mix(z, i) + x7
    return x1 + x2 + x3 + x4 + x5 + x6 + x7 + y + z
"""


def spills_in_python(a: int, b: int, c: int) -> int:
    m = (1 << 64) - 1

    def mix(x: int, y: int) -> int:
        return ((x * 3 + wrap("u64", y)) ^ (x >> 7)) & m

    xs = [(a + 1) & m, (b * 3) & m, c ^ a, (a - b) & m, (b + c) & m, (c * 7) & m, a | c]
    y = mix(xs[0], wrap("s32", xs[1]))
    z = mix(y, wrap("s32", xs[2]))
    for i in range(3):
        z = (z + mix(z, i) + xs[6]) & m
    return (sum(xs) + y + z) & m


def test_values_live_across_calls_spill_to_the_stack(kernel):
    """Seven values live across three calls: more than r6-r9 hold, so some spill."""
    from pybpf.lang.front import compile_function
    from pybpf.lang.program import Unit
    from pybpf.lang.regalloc import allocate

    fn = compile_function(Unit(None), SourceFunction(SPILLS, NAMESPACE), "f")
    alloc = allocate(fn)
    assert alloc.scratch2 is not None  # something spilled
    vectors = [[1, 2, 3], [(1 << 64) - 1, 1 << 63, 12345], [0, 0, 0], [7 << 40, 99, 1 << 31]]
    got = run_source(kernel, SPILLS, ["u64"] * 3, vectors)
    assert got == [spills_in_python(*v) for v in vectors]
