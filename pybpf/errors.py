"""Exceptions raised by pybpf.

Every failure a user can cause (bad input, missing privileges, verifier
rejection, a kernel without BTF) is a subclass of :class:`PyBPFError`, so the
CLI can turn it into one clear line and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class PyBPFError(Exception):
    """Base class of every error pybpf raises on purpose."""


class BTFError(PyBPFError):
    """Malformed, truncated or missing BTF."""


class AsmError(PyBPFError):
    """An instruction or program that cannot be encoded (bad label, out-of-range value)."""


class CORERelocationError(PyBPFError):
    """A CO-RE relocation that cannot be resolved against the target BTF."""


class BPFSyscallError(PyBPFError):
    """A bpf(2) or perf_event_open(2) call failed; ``errno`` keeps the kernel's answer."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class VerifierError(BPFSyscallError):
    """BPF_PROG_LOAD rejected a program; ``log`` holds the verifier's output."""

    def __init__(self, message: str, errno: int, log: str) -> None:
        super().__init__(message, errno)
        self.log = log
