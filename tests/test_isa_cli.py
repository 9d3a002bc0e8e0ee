"""`pybpf asm`, `pybpf disasm`, `pybpf dump`, and the verifier accepting what the text
assembler writes (every form this kernel supports, in a minimal program)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from policy import require_root
from test_isa_llvm import table

from pybpf import asm_text, disasm

ROOT = Path(__file__).resolve().parent.parent
BTF_510 = ROOT / "btf" / "debian-5.10.0-46-amd64.btf.xz"


def pybpf(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pybpf", *args], input=stdin, capture_output=True, cwd=ROOT
    )


def test_asm_then_disasm_then_asm_gives_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "all.s"
    src.write_text("\n".join(table()) + "\n")
    out = tmp_path / "all.bin"
    run = pybpf("asm", str(src), "-o", str(out))
    assert run.returncode == 0, run.stderr
    raw = out.read_bytes()
    assert raw == asm_text.to_bytes(asm_text.assemble(src.read_text()))
    back = pybpf("disasm", str(out), "--btf", str(BTF_510))
    assert back.returncode == 0, back.stderr
    again = pybpf("asm", "-", "-o", str(tmp_path / "again.bin"), stdin=back.stdout)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.bin").read_bytes() == raw


def test_dash_is_stdin_and_stdout(tmp_path: Path) -> None:
    """``pybpf asm - -o -`` reads stdin and writes the raw bytes to stdout (no file named
    ``-``); ``pybpf disasm -`` reads them back from stdin."""
    text = "\n".join(table()) + "\n"
    want = asm_text.to_bytes(asm_text.assemble(text))
    run = subprocess.run([sys.executable, "-m", "pybpf", "asm", "-", "-o", "-"],
                         input=text.encode(), capture_output=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == want
    assert list(tmp_path.iterdir()) == []
    back = pybpf("disasm", "-", "--btf", str(BTF_510), stdin=run.stdout)
    assert back.returncode == 0, back.stderr
    assert asm_text.to_bytes(asm_text.assemble(back.stdout.decode())) == want


def test_asm_listing_and_helper_names(tmp_path: Path) -> None:
    src = tmp_path / "p.s"
    src.write_text("r1 = 1\ncall bpf_ktime_get_ns\nif r0 > 3 goto out\nr0 = -1 ll\nout:\nexit\n")
    run = pybpf("asm", str(src), "--btf", str(BTF_510))
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines() == [
        "    0: b7 01 00 00 01 00 00 00  r1 = 1",
        "    1: 85 00 00 00 05 00 00 00  call bpf_ktime_get_ns#5",
        "    2: 25 00 02 00 03 00 00 00  if r0 > 3 goto +2",
        "    3: 18 00 00 00 ff ff ff ff  r0 = -1 ll",
        "    4: 00 00 00 00 ff ff ff ff",
        "    5: 95 00 00 00 00 00 00 00  exit",
    ]


@pytest.mark.parametrize(
    "args, text, message",
    [
        (["asm"], "r0 = 0\nfrob r1\nexit\n", "f.s:2: unknown mnemonic 'frob'"),
        (["asm"], "r0 = 0\n\nr12 = 1\n", "f.s:3: bad register 'r12'"),
        (["asm"], "if r1 > 3 goto +99999\n", "f.s:1: jump offset 99999 does not fit in 16 bits"),
        (["asm"], "w1 = 4294967296\n", "f.s:1: immediate 4294967296 does not fit in 32 bits"),
        (["asm"], "goto out\n", "f.s:1: jump to undefined label 'out'"),
        (["asm"], "r1 = start ll\nexit\n", "map 'start' by name cannot be written as raw bytes"),
        (["asm", "--btf", str(BTF_510)], "call bpf_no_such_helper\n",
         "helper bpf_no_such_helper() does not exist"),
        (["disasm"], "1234567890123", "13 bytes is not a whole number of 8-byte slots"),
        (["asm", "--btf", str(BTF_510)], "r0 = 0\ncall kfunc(bpf_rcu_read_lock)\n",
         "f.s:2: no kernel function 'bpf_rcu_read_lock' in the BTF"),  # 5.10 has no such kfunc
    ],
)  # fmt: skip
def test_errors_are_one_line(tmp_path: Path, args: list[str], text: str, message: str) -> None:
    path = tmp_path / "f.s"
    path.write_text(text)
    run = pybpf(*args[:1], str(path), *args[1:])
    err = run.stderr.decode()
    assert run.returncode == 1
    assert err.count("\n") == 1 and err.startswith("pybpf: error: "), err
    assert message in err
    assert "Traceback" not in err


def test_missing_file() -> None:
    for cmd in ("asm", "disasm"):
        run = pybpf(cmd, "/nonexistent/x")
        assert run.returncode == 1
        want = "pybpf: error: cannot read /nonexistent/x: No such file or directory\n"
        assert run.stderr.decode() == want


def test_dump_shows_the_program_as_relocated_for_that_kernel() -> None:
    from pybpf.btf import BTF
    from pybpf.object import prepare
    from pybpf.runner import load_tool, tool_parser

    run = pybpf("dump", "runqslower", "--btf", str(BTF_510))
    assert run.returncode == 0, run.stderr
    text = run.stdout.decode()
    # Linux 5.10: task_struct.state (a long at offset 16) is what runqslower reads
    state = r"= \*\(u64 \*\)\(r\d \+ 16\)  # CO-RE byte_off task_struct___o.state \[0:0\]: 0 -> 16"
    assert re.search(state, text), text
    assert "CO-RE field_exists task_struct___x.__state [0:0]: 1 -> 0" in text
    assert "call bpf_map_update_elem#2" in text and "= map_fd(start) ll" in text
    # the text is a faithful listing: reassembled, it is the prepared program
    tool = load_tool("runqslower")
    spec = tool.build(tool_parser(tool, "runqslower").parse_args([]))
    prepared = prepare(spec, BTF.from_file(BTF_510))
    sections = re.split(r"\n(?=; )", text)
    assert len(sections) == len(prepared.programs)
    for section, prog in zip(sections, prepared.programs):
        assert f"{prog.name}: SEC(\"{prog.section}\")" in section
        got = asm_text.assemble(section)
        fields = [(i.opcode, i.dst, i.src, i.off, i.imm & ((1 << 64) - 1), i.map) for i in got]
        want = [(i.opcode, i.dst, i.src, i.off, i.imm & ((1 << 64) - 1), i.map) for i in prog.insns]
        assert fields == want


def test_dump_errors() -> None:
    run = pybpf("dump", "no-such-program")
    assert run.returncode != 0
    assert run.stderr.decode().startswith("pybpf: error: ") and b"Traceback" not in run.stderr


# ---------------------------------------------------------------------------------------------
# the verifier accepts the forms the execution oracle (test_isa_kernel) does not run


@pytest.fixture(scope="module")
def kernel() -> tuple:
    require_root()
    from pybpf import syscall, uapi
    from pybpf.btf import BTF

    return syscall, uapi, BTF.kernel()


def _load(kernel: tuple, text: str, **options: object) -> int:
    syscall, uapi, btf = kernel
    raw = asm_text.to_bytes(asm_text.assemble(text), disasm.helper_numbers(btf).__getitem__)
    with syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, raw, **options) as fd:
        return syscall.prog_test_run(fd.fileno(), bytes(64)).retval


@pytest.mark.kernel
def test_may_goto_helpers_and_maps(kernel: tuple) -> None:
    syscall, uapi, _ = kernel
    loop = "r0 = 0\nr1 = 10\nl: may_goto out\nr0 += 1\nr1 -= 1\nif r1 != 0 goto l\nout: exit\n"
    assert _load(kernel, loop) == 10  # may_goto (6.9)
    assert _load(kernel, "call bpf_ktime_get_ns\nr0 = 1\nexit\n") == 1
    with syscall.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0, "isa_cli") as m:
        syscall.map_update_elem(m.fileno(), b"\0" * 4, struct.pack("<Q", 41))
        lookup = ("*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem\n"
                  "if r0 == 0 goto out\nr0 = *(u64 *)(r0 + 0)\nout:\nexit\n")  # fmt: skip
        assert _load(kernel, f"r1 = map_fd({m.fileno()}) ll\n" + lookup) == 41
        fd_array = {"fd_array": [m.fileno()]}  # BPF_PSEUDO_MAP_IDX(_VALUE), 5.14
        assert _load(kernel, "r1 = map_idx(0) ll\n" + lookup, **fd_array) == 41
        value = "r1 = map_idx_value(0, 0) ll\nr0 = *(u64 *)(r1 + 0)\nr0 += 1\nexit\n"
        assert _load(kernel, value, **fd_array) == 42
        direct = f"r1 = map_value({m.fileno()}, 0) ll\nr0 = *(u64 *)(r1 + 0)\nexit\n"
        assert _load(kernel, direct) == 41


@pytest.mark.kernel
def test_kfunc_call(kernel: tuple) -> None:
    from pybpf.btf import BTF_KIND_FUNC

    _, _, btf = kernel
    lock = btf.find("bpf_rcu_read_lock", BTF_KIND_FUNC)[0]
    unlock = btf.find("bpf_rcu_read_unlock", BTF_KIND_FUNC)[0]
    text = f"call kfunc({lock})\ncall kfunc({unlock})\nr0 = 3\nexit\n"
    assert _load(kernel, text) == 3
    helper, kfunc = disasm.btf_namers(btf)
    listing = disasm.disassemble(asm_text.to_bytes(asm_text.assemble(text)), helper, kfunc)
    assert f"call kfunc(bpf_rcu_read_lock#{lock})" in listing
    by_name = "call kfunc(bpf_rcu_read_lock)\ncall kfunc(bpf_rcu_read_unlock)\nr0 = 3\nexit\n"
    ids = disasm.kfunc_ids(btf)
    assert asm_text.assemble(by_name, kfunc_id=ids.__getitem__) == asm_text.assemble(text)


@pytest.mark.kernel
def test_callback_by_pseudo_func(kernel: tuple) -> None:
    """bpf_loop(5, &cb, &sum, 0): BPF_PSEUDO_FUNC (5.13); callbacks need func_info."""
    from pybpf.btf_encoder import BTF_FUNC_STATIC, BTFBuilder

    syscall, _, _ = kernel
    text = """
        r1 = 5
        r2 = func(cb) ll
        r3 = r10
        r3 += -8
        *(u64 *)(r10 - 8) = 0
        r4 = 0
        call bpf_loop
        r0 = *(u64 *)(r10 - 8)
        exit
    cb:                         # long cb(u64 index, void *ctx): *ctx += index
        r3 = *(u64 *)(r2 + 0)
        r3 += r1
        *(u64 *)(r2 + 0) = r3
        r0 = 0
        exit
    """
    b = BTFBuilder()
    proto = b.add_func_proto(b.add_int("long", 8, signed=True), [])
    main, cb = b.add_func("main", proto, BTF_FUNC_STATIC), b.add_func("cb", proto, BTF_FUNC_STATIC)
    with syscall.btf_load(b.encode()) as btf_fd:
        info = struct.pack("<IIII", 0, main, 10, cb)
        assert _load(kernel, text, prog_btf_fd=btf_fd.fileno(), func_info=info) == 0 + 1 + 2 + 3 + 4


@pytest.mark.kernel
def test_arena_address_space_cast(kernel: tuple) -> None:
    syscall, uapi, _ = kernel
    flags, arena = uapi.BPF_F_MMAPABLE, uapi.BPF_MAP_TYPE_ARENA
    with syscall.map_create(arena, 0, 0, 1, flags, "isa_arena", map_extra=1 << 32) as a:
        cast = "r1 = 0\nr2 = addr_space_cast(r1, 0, 1)\nr0 = 5\nexit\n"
        text = f"r1 = map_fd({a.fileno()}) ll\n" + cast
        assert _load(kernel, text) == 5  # addr_space_cast (6.9)


@pytest.mark.kernel
def test_what_this_kernel_refuses(kernel: tuple) -> None:
    """callx is LLVM's, not the kernel's; a BTF-id ksym needs data symbols in kallsyms."""
    from pybpf.btf import BTF_KIND_VAR
    from pybpf.errors import VerifierError

    _, _, btf = kernel
    with pytest.raises(VerifierError, match="unknown opcode 8d"):
        _load(kernel, "r1 = 0\ncallx r1\nr0 = 0\nexit\n")
    var = btf.find("runqueues", BTF_KIND_VAR)[0]
    try:
        assert _load(kernel, f"r1 = btf_id({var}) ll\nr0 = 2\nexit\n") == 2
    except VerifierError as err:  # CONFIG_KALLSYMS_ALL=n kernels cannot resolve the address
        assert "failed to find the address for kernel symbol 'runqueues'" in str(err)

