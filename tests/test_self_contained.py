"""The repository speaks of itself alone: no path of a development machine, no reference
to documents or trackers outside it, and every relative link in its docs resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest  # noqa: E402

pytestmark = pytest.mark.oracle("git")  # the tracked files

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"\.\./shared|/work/|/root/|\bDESIGN\.md\b"
                       r"|(?i:\bworkplace\b|(?<!\.)\bsessions?\b|\bissues?\b)")  # fmt: skip
EXEMPT: set[str] = set()
THIS = Path(__file__).relative_to(ROOT).as_posix()


def tracked_text() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    files = {}
    for name in names:
        if name in EXEMPT or name == THIS or name.startswith("btf/") or not (ROOT / name).is_file():
            continue
        try:
            files[name] = (ROOT / name).read_text()
        except UnicodeDecodeError:
            continue
    return files


def test_no_outside_references() -> None:
    files = tracked_text()
    assert "README.md" in files and "docs/design.md" in files and "pybpf/cli.py" in files
    hits = [f"{name}:{text[: m.start()].count(chr(10)) + 1}: {m[0]}"
            for name, text in files.items() for m in FORBIDDEN.finditer(text)]  # fmt: skip
    assert hits == []


def test_design_opens_with_the_project() -> None:
    first = (ROOT / "docs/design.md").read_text().split("\n\n", 2)[1]
    assert "left open" not in first and "shared" not in first, first


def test_relative_links_resolve() -> None:
    for name, text in tracked_text().items():
        if not name.endswith(".md"):
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            assert (ROOT / name).parent.joinpath(target).resolve().exists(), (name, target)
