"""Every command and every shipped program has a real ``--help``: a usage line for that
command, every option its parser accepts, exit 0, nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pybpf.cli import COMMANDS, command_parsers

ROOT = Path(__file__).resolve().parent.parent

# What a user would type, with options that must be in each help (an independent list:
# command_parsers() could be wrong too).
EXPECTED = {
    "list": [],
    "run": ["PROGRAM", "--btf", "-v", "runqslower", "runqlat"],
    "run runqslower": ["--min-us", "-p", "-t", "-c", "-P", "--json", "--attach",
                       "--transport", "--btf", "-v", "min_us"],
    "run runqslower_lang": ["--min-us", "-p", "-t", "-c", "-P", "--json", "--attach",
                            "--transport", "--btf", "-v", "min_us"],
    "run runqlat": ["-T", "-m", "-p", "-P", "-L", "--pidnss", "--max-keys", "--json",
                    "--attach", "--btf", "-v", "interval", "count"],
    "export": ["PROGRAM", "--listen", "--bpf-stats", "--btf", "-v"],
    "export runqlat": ["--listen", "--bpf-stats", "-p", "-P", "-L", "--pidnss", "--max-keys",
                       "--max-series", "--attach", "--btf", "-v"],
    "explain": ["PROGRAM", "--btf", "--json", "-v"],
    "dump": ["PROGRAM", "--btf"],
    "asm": ["-o", "--btf"],
    "disasm": ["--btf"],
    "btf dump": ["--btf", "--base", "--format"],
    "btf show": ["TYPE", "--btf", "--base"],
}  # fmt: skip


def pybpf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)  # fmt: skip


def test_every_command_is_covered() -> None:
    parsers = command_parsers()
    assert set(parsers) == set(EXPECTED)
    assert {words.split()[0] for words in parsers} == set(COMMANDS)


@pytest.mark.parametrize("words", sorted(EXPECTED))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(words: str, flag: str) -> None:
    r = pybpf(*words.split(), flag)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith(f"usage: pybpf {words} "), r.stdout
    assert "options:" in r.stdout and "-h, --help" in r.stdout, r.stdout
    words_in_help = set(r.stdout.replace(",", " ").replace("[", " ").replace("]", " ").split())
    for option in EXPECTED[words]:
        assert option in words_in_help, (words, option, r.stdout)
    for action in command_parsers()[words]._actions:
        for option in action.option_strings:
            assert option in words_in_help, (words, option, r.stdout)


def test_top_level_help_names_every_command() -> None:
    r = pybpf("--help")
    assert r.returncode == 0 and r.stderr == ""
    for command in COMMANDS:
        assert f"pybpf {command} " in r.stdout, command
    r = pybpf("btf", "--help")
    assert r.returncode == 0 and "pybpf btf dump" in r.stdout and "pybpf btf show" in r.stdout


@pytest.mark.parametrize("words", ["run", "export"])
def test_without_a_program_is_a_usage_error(words: str) -> None:
    for args in ([], ["-v", "runqlat"]):
        r = pybpf(words, *args)
        assert r.returncode == 2, r
        assert r.stdout == "" and "Traceback" not in r.stderr
        assert r.stderr.splitlines()[-1].startswith(f"pybpf {words}: error: "), r.stderr

