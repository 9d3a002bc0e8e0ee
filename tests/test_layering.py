"""The layering, checked: pure code never reaches the kernel-facing code, imports point down.

Pure modules (instruction set, assembler, BTF, CO-RE, object specs and everything under a
pure package) must be usable offline and testable without root, so none of them may import
``ctypes`` or a module that makes BPF syscalls, directly or through another module,
at the top or inside a function.  The programs (tools) sit above the library: the library
never imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "pybpf"

PURE_MODULES = {
    "pybpf.errors", "pybpf.ints", "pybpf.abi", "pybpf.uapi", "pybpf.isa", "pybpf.asm",
    "pybpf.asm_text",
    "pybpf.disasm", "pybpf.cdecl", "pybpf.btf", "pybpf.btf_encoder", "pybpf.btf_dump",
    "pybpf.btf_show",
    "pybpf.btf_cache", "pybpf.core", "pybpf.object", "pybpf.record",
}  # fmt: skip
# Every module under these packages is pure too (when the package exists).
PURE_PACKAGES = ("pybpf.lang", "pybpf.elf")
KERNEL_FACING = {
    "pybpf.abi_attrs", "pybpf.syscall", "pybpf.epoll", "pybpf.maps", "pybpf.perf",
    "pybpf.ringbuf", "pybpf.probes",
    "pybpf.loader", "pybpf.runner", "pybpf.exporter", "pybpf.cli", "pybpf.bpfobject",
    "pybpf.objcli",
    # a pure package's glue to the runner: the language's tools run like any other
    "pybpf.lang.tool",
}  # fmt: skip
FORBIDDEN_STDLIB = {"ctypes"}  # file mmap (the BTF cache) is pure: no syscall into BPF


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # ``from . import isa`` imports a module, not a name
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def is_pure(name: str) -> bool:
    if name in KERNEL_FACING:
        return False
    return name in PURE_MODULES or name.startswith(tuple(p + "." for p in PURE_PACKAGES)) or (
        name in PURE_PACKAGES
    )


GRAPH = {name: imports_of(name, path) for name, path in modules().items()}


def reach(start: str) -> dict[str, str]:
    """Every module reachable from ``start`` (inside pybpf), with the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        cur = todo.pop()
        for dep in GRAPH.get(cur, ()):
            if dep not in seen:
                seen[dep] = cur
                if dep in GRAPH:
                    todo.append(dep)
    return seen


def test_the_classification_covers_every_module() -> None:
    """A new module must be placed on one side of the line."""
    unplaced = [n for n in GRAPH if not is_pure(n) and n not in KERNEL_FACING
                and n not in ("pybpf", "pybpf.__main__", "pybpf.tool")
                and not n.startswith("pybpf.programs")]  # fmt: skip
    assert not unplaced, f"classify these as pure or kernel-facing: {unplaced}"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if is_pure(n)))
def test_pure_code_never_reaches_the_kernel(name: str) -> None:
    reached = reach(name)
    bad = {dep: via for dep, via in reached.items()
           if dep in KERNEL_FACING or dep.split(".")[0] in FORBIDDEN_STDLIB}  # fmt: skip
    assert not bad, f"{name} reaches kernel-facing code: " + ", ".join(
        f"{dep} (imported by {via})" for dep, via in sorted(bad.items())
    )


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_the_library_never_imports_the_tools(name: str) -> None:
    tools = {dep for dep in GRAPH[name] if dep.startswith("pybpf.programs")}
    if name.startswith("pybpf.programs") or name == "pybpf.runner":
        return  # the runner finds and lists the tools by name: the one way down to them
    assert not tools, f"{name} imports tools: {sorted(tools)}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import walk catches an import hidden in a function (it can fail)."""
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from . import syscall\n    import ctypes\n")
    found = imports_of("pybpf.x", src)
    assert "pybpf.syscall" in found and "ctypes" in found
