"""Compiled BPF objects (``.bpf.o``, clang's output) as pybpf object specs; pure code."""

from .parse import ElfObject, internal_map_name, object_name, open_file, parse_object
from .reader import ElfError

__all__ = ["ElfError", "ElfObject", "internal_map_name", "object_name", "open_file",
           "parse_object"]
