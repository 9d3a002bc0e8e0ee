"""Compile errors name the user's file:line:col and say what is wrong, in one line."""

from __future__ import annotations

import pytest

import pybpf.lang as lang
from pybpf.asm import Asm
from pybpf.lang import CompileError, Struct, u8
from pybpf.lang.program import SourceFunction, compile_subprogram


class Big(Struct):
    data: u8[600]


NS = dict(vars(lang), Big=Big)


def kernel_btf():
    """Helpers are checked against a BTF's enum bpf_func_id: the kernel's, or none."""
    import os

    from pybpf.btf import BTF

    return BTF.kernel() if os.path.exists("/sys/kernel/btf/vmlinux") else None


def error_of(body: str) -> str:
    text = "def f(a: u32, b: s64) -> u64:\n" + "".join(f"    {line}\n" for line in body.split("\n"))
    with pytest.raises(CompileError) as info:
        compile_subprogram(SourceFunction(text, NS, "prog.py", 10), Asm(), kernel_btf())
    return str(info.value)


@pytest.mark.parametrize("body, where, words", [
    ("x = 1.5", "prog.py:11:9", "float constants"),
    ("return a / b", "prog.py:11:12", "use //"),
    ("y = nowhere + 1", "prog.py:11:9", "'nowhere' is not defined"),
    ("for i in [1, 2]:\n    pass", "prog.py:11:14", "range"),
    ("x: u32 = 1\nx: u64 = 2", "prog.py:12:5", "already a u32"),
    ("while a:\n    a -= 1\nelse:\n    pass", "prog.py:11:5", "while ... else"),
    ("big = Big()\nreturn 0", "prog.py", "600 bytes of stack"),
    ("x = a[1]", "prog.py:11:9", "only arrays and maps"),
    ("break", "prog.py:11:5", "break outside a loop"),
    ("for i in range(0, 4, 0):\n    pass", "prog.py:11:26", "non-zero constant"),
    ("return u8(a, b)", "prog.py:11:12", "one argument"),
    ("return bpf.no_such_helper_at_all()", "prog.py", "no_such_helper_at_all"),
])  # fmt: skip
def test_errors_point_at_the_source(body, where, words):
    if "helper" in body and kernel_btf() is None:
        pytest.skip("no BTF to check helpers against")
    message = error_of(body)
    assert message.startswith(where), message
    assert words in message and "\n" not in message


def test_parameters_need_types():
    text = "def f(a) -> u64:\n    return a\n"
    with pytest.raises(CompileError, match=r"^prog.py:1:7: parameter a needs a type"):
        compile_subprogram(SourceFunction(text, NS, "prog.py"), Asm())
