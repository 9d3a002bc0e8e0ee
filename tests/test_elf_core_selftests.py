"""The kernel's own CO-RE tests (Linux 6.1's selftests, Debian's linux-source-6.1): each
test_core_reloc_*.c relocated against each btf__core_reloc_*.c of its case list in
prog_tests/core_reloc.c, by pybpf and by libbpf (``btf_custom_path``), both compiled here
with clang-19 (test oracle only).  Cases the selftests expect to fail must fail for both;
the others must load with equal translated instructions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Optional

import libbpf_oracle
import pytest
from elf_matrix import normalised_xlated
from policy import unavailable

from pybpf.bpfobject import BPFObject
from pybpf.btf import BTF
from pybpf.errors import BPFSyscallError, PyBPFError

pytestmark = [pytest.mark.kernel, pytest.mark.oracle("clang-19")]

TARBALL = "/usr/src/linux-source-6.1.tar.xz"
SELFTESTS = "linux-source-6.1/tools/testing/selftests/bpf/"


@dataclass(frozen=True)
class Case:
    name: str
    obj: str  # test_core_reloc_X.bpf.o
    btf: Optional[str]  # btf__core_reloc_Y.bpf.o, or None: the running kernel
    fails: bool


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def parse_cases(core_reloc_c: str) -> list[Case]:
    """The test_cases[] of prog_tests/core_reloc.c: macros expanded as far as they name
    the object, the BTF source and whether the case must fail."""
    macros: dict[str, tuple[str, str]] = {}  # name -> (params, body)
    for line in _logical_lines(core_reloc_c):
        m = re.match(r"#define (\w+)\(([^)]*)\)(.*)", line)
        if m:
            macros[m.group(1)] = (m.group(2), m.group(3))

    def expand(text: str, depth: int = 0) -> str:
        for _ in range(5):
            def sub(m: re.Match) -> str:
                params, body = macros[m.group(1)]
                args = [a.strip() for a in m.group(2).split(",")]
                names = [p.strip() for p in params.split(",")]
                for i, (p, a) in enumerate(zip(names, args)):
                    if p == "...":  # the rest of the arguments, as written
                        body = body.replace("__VA_ARGS__", ", ".join(args[i:]))
                        break
                    body = body.replace(f"#{p}", f'"{a}"')
                    body = re.sub(rf"\b{re.escape(p)}\b", lambda _m, a=a: a, body)
                return body
            text = re.sub(r"\b([A-Z][A-Z0-9_]*)\(([^()]*)\)",
                          lambda m: sub(m) if m.group(1) in macros else m.group(0), text)
        return re.sub(r'"\s*"', "", text)  # "btf__core_reloc_" "x" ".bpf.o" -> one string

    start = core_reloc_c.index("test_cases[] = {")
    end = core_reloc_c.index("\n};", start)
    text = " ".join(_logical_lines(core_reloc_c[start:end]))
    text = re.sub(r"\bsizeof\s*\([^()]*\)", "0", text)  # macro arguments: no parentheses
    body = expand(text)
    cases = []
    depth, block = 0, ""
    for ch in body[body.index("{") + 1 :]:
        if ch == "{":
            depth += 1
        if depth:
            block += ch
        if ch == "}":
            depth -= 1
            if depth == 0:
                obj = re.search(r'\.bpf_obj_file = "([^"]+)"', block)
                btf = re.search(r'\.btf_src_file = (?:"([^"]+)"|NULL)', block)
                name = re.search(r'\.case_name = "([^"]+)"', block)
                if obj:
                    cases.append(Case(name.group(1) if name else obj.group(1), obj.group(1),
                                      btf.group(1) if btf and btf.group(1) else None,
                                      ".fails = true" in block))  # fmt: skip
                block = ""
    return cases


@pytest.fixture(scope="module")
def selftests() -> tuple[str, list[Case]]:
    clang = shutil.which("clang-19")
    ok = os.path.exists(TARBALL) and clang and os.path.exists("/usr/include/bpf/bpf_helpers.h")
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail("linux-source-6.1, clang-19 and libbpf-dev are CI oracles")
        unavailable("needs linux-source-6.1, clang-19 and libbpf-dev")
    work = os.path.join(tempfile.gettempdir(), f"pybpf-core-reloc-{int(os.stat(TARBALL).st_mtime)}")
    done = os.path.join(work, ".done")
    if not os.path.exists(done):
        os.makedirs(work, exist_ok=True)
        wanted = [SELFTESTS + "progs/test_core_reloc_*", SELFTESTS + "progs/btf__core_reloc_*",
                  SELFTESTS + "progs/core_reloc_types.h", SELFTESTS + "prog_tests/core_reloc.c"]
        if shutil.which("tar"):  # GNU tar + xz: ~1 min; Python's tarfile: ~6
            subprocess.run(["tar", "-xJf", TARBALL, "-C", work, "--wildcards", *wanted],
                           check=True)  # fmt: skip
        else:
            with tarfile.open(TARBALL) as tar:
                import fnmatch

                members = [m for m in tar if any(fnmatch.fnmatch(m.name, w) for w in wanted)]
                tar.extractall(work, members=members)  # noqa: S202 (Debian's own tarball)
        progs = os.path.join(work, SELFTESTS, "progs")
        stubs = os.path.join(work, "inc", "gnu")
        os.makedirs(stubs, exist_ok=True)
        open(os.path.join(stubs, "stubs-32.h"), "w").close()  # bpf target on x86-64 libc
        for src in sorted(os.listdir(progs)):
            if not src.endswith(".c") or src == "test_core_reloc_module.c":  # vmlinux.h
                continue
            subprocess.run([clang, "-target", "bpf", "-mcpu=v3", "-O2", "-g",
                            "-D__TARGET_ARCH_x86", "-I", os.path.join(work, "inc"), "-I", progs,
                            "-I", "/usr/include/x86_64-linux-gnu", "-c", src, "-o",
                            os.path.join(work, src[:-2] + ".bpf.o")],
                           cwd=progs, check=True)  # fmt: skip
        open(done, "w").close()
    with open(os.path.join(work, SELFTESTS, "prog_tests", "core_reloc.c")) as f:
        cases = [c for c in parse_cases(f.read()) if c.obj != "test_core_reloc_module.bpf.o"]
    return work, cases


def test_cases_parsed(selftests: tuple[str, list[Case]]) -> None:
    work, cases = selftests
    assert len(cases) >= 75
    assert sum(c.fails for c in cases) >= 20
    assert all(os.path.exists(os.path.join(work, c.obj)) for c in cases)
    assert all(c.btf is None or os.path.exists(os.path.join(work, c.btf)) for c in cases)


def _run_case(work: str, case: Case) -> tuple[bool, bool, str]:
    """(libbpf loaded, pybpf loaded, mismatch description or "")."""
    obj = os.path.join(work, case.obj)
    btf = os.path.join(work, case.btf) if case.btf else None
    with BPFObject.open(obj) as probe:
        progs = [p.name for n, p in ((p.name, p) for p in probe.elf.spec.programs)
                 if probe.autoload[n]]  # fmt: skip
    target = BTF.from_file(btf) if btf else None
    with libbpf_oracle.LibbpfObject(obj, progs, btf_custom_path=btf) as lo:
        theirs_ok = lo.error == 0
        try:
            with BPFObject.open(obj) as ours:
                ours.load(target=target)
                if not theirs_ok:
                    return theirs_ok, True, ""
                for p in progs:
                    if normalised_xlated(lo.fd(p)) != normalised_xlated(ours.programs[p].fileno()):
                        return theirs_ok, True, f"{p}: xlated differs"
                return theirs_ok, True, ""
        except (BPFSyscallError, PyBPFError) as err:
            return theirs_ok, False, str(err).splitlines()[0]


def test_core_reloc_cases(selftests: tuple[str, list[Case]], need_root: None) -> None:
    work, cases = selftests
    problems = []
    for case in cases:
        theirs, ours, detail = _run_case(work, case)
        if theirs == case.fails:
            problems.append(f"{case.name}: libbpf {'loads' if theirs else 'fails'}, the "
                            f"selftests expect {'failure' if case.fails else 'success'}")
        if ours != theirs or (ours and detail):
            problems.append(f"{case.name} ({case.btf}): libbpf {theirs}, pybpf {ours} {detail}")
    assert problems == []
