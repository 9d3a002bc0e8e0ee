"""The README says what the code does: its opening commands, a usage entry with every
option of every command (from the parsers themselves, so that neither can drift), and a
sample of ``pybpf explain`` that is the real output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pybpf.cli import command_parsers
from pybpf.runner import shipped_programs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
OPENING = (
    "# pybpf\n\n```sh\n"
    "python3 -m venv .venv && .venv/bin/pip install . && "
    ".venv/bin/python -m pybpf run runqslower --min-us 200\n"
    "bash .ci/run\n```\n"
)


def test_opens_with_the_two_commands() -> None:
    assert README.startswith(OPENING)
    assert "apt-get install python3-venv" in README  # what a fresh Debian lacks for venv


def usage_entries() -> dict[str, str]:
    """The ``## Usage`` block: {command words ("run runqlat", "btf show", "explain"): the
    entry's text, continuation lines included, comments dropped}."""
    block = README.split("## Usage\n\n```\n", 1)[1].split("```\n", 1)[0]
    entries: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        text = line.split("#", 1)[0]
        if line.startswith("pybpf "):
            words = text.split()
            key = words[1]
            if len(words) > 2 and words[2].endswith(".bpf.o"):  # a compiled object
                key = f"{key} object"
            elif key in ("run", "export") and words[2] in shipped_programs():
                key = f"{key} {words[2]}"
            elif key == "btf":
                key = f"btf {words[2]}"
            assert key not in entries, f"two usage entries for {key}"
            entries[key] = text
        elif text.strip():
            assert line.startswith(" ") and key, line
            entries[key] += " " + text
    return entries


def test_usage_lists_every_option_of_every_command() -> None:
    from pybpf import objcli

    entries = usage_entries()
    parsers = command_parsers()
    parsers.update({"run object": objcli.run_parser(), "explain object": objcli.explain_parser(),
                    "dump object": objcli.dump_parser()})  # fmt: skip
    assert set(entries) == set(parsers)
    for key, parser in parsers.items():
        tokens = set(re.split(r"[\s\[\]|,]+", entries[key]))
        for action in parser._actions:
            if not action.option_strings or "-h" in action.option_strings:
                continue
            assert tokens & set(action.option_strings), (key, action.option_strings)
            for choice in action.choices or ():
                assert choice in tokens, (key, action.option_strings, choice)


def test_explain_sample_is_the_real_output() -> None:
    """Each run of lines between ``...`` is a run of the real output, in order, the first
    one from its first line."""
    command = "pybpf explain runqslower --btf btf/debian-5.10.0-46-amd64.btf.xz"
    sample = README.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
    chunks = [c.strip("\n").splitlines() for c in sample.split("...\n")]
    real = subprocess.run([sys.executable, "-m", "pybpf", *command.split()[1:]], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert chunks[0] == real[: len(chunks[0])], (chunks[0], real[:5])
    at = len(chunks[0])
    for chunk in chunks[1:]:
        if not chunk:
            continue
        found = next((i for i in range(at, len(real)) if real[i : i + len(chunk)] == chunk), None)
        assert found is not None, (chunk, real)
        at = found + len(chunk)
